// Package metrics turns probe Results into Prometheus metrics. It is a
// probes.Sink: it knows Results, not Matrix.
//
// Cardinality is bounded on purpose: per-tenant series are gauges and
// counters of the last run; histograms aggregate over tenants (per probe and
// step), so 1,000 tenants stay cheap to scrape. No room id, user id or error
// text is ever a label.
package metrics

import (
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	dto "github.com/prometheus/client_model/go"
	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/probes"
)

const namespace = "mxprobe"

// DurationBuckets suit probe runs and steps: 5 ms to 60 s.
var DurationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics is the Prometheus sink.
type Metrics struct {
	// Registry holds every metric but the per-tenant gauges of the last
	// runs: register more collectors here, but gather from Metrics itself
	// (Gather), which adds those gauges.
	Registry *prometheus.Registry

	duration      *prometheus.HistogramVec
	stepDuration  *prometheus.HistogramVec
	delivery      *prometheus.HistogramVec
	lateness      prometheus.Histogram
	runs          *prometheus.CounterVec
	steps         *prometheus.CounterVec
	logins        *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	tokenRefresh  *prometheus.CounterVec
	cleanupFail   *prometheus.CounterVec
	revocations   *prometheus.CounterVec
	reloadOK      prometheus.Gauge
	reloadTime    prometheus.Gauge
	configuredRun *prometheus.GaugeVec
	interval      *prometheus.GaugeVec

	mu    sync.RWMutex
	state map[key]*last
	// pairs interns the label pairs of the per-tenant gauges (under mu).
	pairs map[[2]string]*dto.LabelPair

	// observers see the Results of one probe type each (AddObserver).
	obsMu     sync.Mutex
	observers map[string][]func(probes.Result)

	// families are the per-tenant gauge families (Gather).
	families [famCount]gaugeFamily
}

type key struct{ probe, tenant string }

// last holds what the per-tenant gauges show: the latest run's values.
type last struct {
	success     float64
	duration    float64
	started     float64
	lastSuccess float64
	failedStep  string
	failedClass string
	steps       []RunSeries // RunStepDuration series of the run
	delivery    float64
	hasDelivery bool
	// metrics are the series of the gauges above, built once per run (in
	// Observe) rather than on every scrape, by family (nil: absent);
	// stepMetrics per step name.
	metrics     [famCount]*dto.Metric
	stepMetrics map[string]*dto.Metric
}

// New builds the sink and registers every collector, including the Go and
// process collectors and mxprobe_build_info.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, state: map[key]*last{}, pairs: map[[2]string]*dto.LabelPair{}, families: lastFamilies()}
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "probe_duration_seconds",
		Help:    "Duration of probe runs, over all tenants.",
		Buckets: DurationBuckets,
	}, []string{"probe"})
	m.stepDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "probe_step_duration_seconds",
		Help:    "Duration of probe steps that ran, over all tenants.",
		Buckets: DurationBuckets,
	}, []string{"probe", "step"})
	m.delivery = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "message_delivery_seconds",
		Help:    "Time from sending a probe message to the first /sync response of the receiver that carries it.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"probe"})
	m.lateness = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "scheduler_lateness_seconds",
		Help:    "How late scheduled runs started against their planned time.",
		Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "probe_runs_total",
		Help: "Probe runs by result: success, warning, failure, or skipped (the previous run was still going).",
	}, []string{"probe", "tenant", "result"})
	m.steps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "probe_step_total",
		Help: "Probe steps that ran, by result: success or the failure class.",
	}, []string{"probe", "step", "result"})
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "login_total",
		Help: "Logins performed by probes, by method and result.",
	}, []string{"method", "result"})
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "rate_limited_total",
		Help: "429 M_LIMIT_EXCEEDED answers met by probes, by the step that met them (empty: outside a named step).",
	}, []string{"probe", "tenant", "step"})
	m.tokenRefresh = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "token_refresh_total",
		Help: "Sessions renewed after expiry or M_UNKNOWN_TOKEN (by refresh token or a fresh login).",
	}, []string{"probe", "tenant"})
	m.cleanupFail = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "cleanup_failures_total",
		Help: "Probe rooms that could not be left or forgotten.",
	}, []string{"probe"})
	m.revocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "mas_revocations_total",
		Help: "Revocations of MAS sessions replaced by a fresh login, at MAS's revocation_endpoint, by result.",
	}, []string{"result"})
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "config_last_reload_successful",
		Help: "Whether the last configuration reload succeeded.",
	})
	m.reloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "config_last_reload_success_timestamp_seconds",
		Help: "Time of the last successful configuration reload.",
	})
	m.configuredRun = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "probe_configured_subjects",
		Help: "Tenants (or 1 for global probes) each configured probe runs for.",
	}, []string{"probe", "type"})
	m.interval = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "probe_interval_seconds",
		Help: "Longest time between two scheduled starts of each probe (absent for probes that run on demand only).",
	}, []string{"probe"})
	reg.MustRegister(
		m.duration, m.stepDuration, m.delivery, m.lateness, m.runs, m.steps, m.logins,
		m.rateLimited, m.tokenRefresh, m.cleanupFail, m.revocations, m.reloadOK, m.reloadTime, m.configuredRun, m.interval,
		(*lastCollector)(m),
		versioncollector.NewCollector(namespace),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// AddObserver makes o see every Result of probe type typ (a type's own
// per-result metrics, registered by the type on m.Registry).
func (m *Metrics) AddObserver(typ string, o func(probes.Result)) {
	m.obsMu.Lock()
	defer m.obsMu.Unlock()
	if m.observers == nil {
		m.observers = map[string][]func(probes.Result){}
	}
	m.observers[typ] = append(m.observers[typ], o)
}

// Observe implements probes.Sink.
func (m *Metrics) Observe(r probes.Result) {
	m.runs.WithLabelValues(r.Probe, r.Tenant, string(r.Outcome)).Inc()
	if r.Outcome == probes.OutcomeSkipped {
		return
	}
	if r.MeasuredNothing() {
		// Refused before measuring anything (a 429 at a login): its 429s
		// count, and success, latencies and last success stay as they were.
		m.countRateLimited(r)
		return
	}
	if v, ok := r.Signals[probes.LatenessKey]; ok {
		m.lateness.Observe(v)
	}
	m.duration.WithLabelValues(r.Probe).Observe(r.Duration.Seconds())
	for _, s := range r.Steps {
		m.stepDuration.WithLabelValues(r.Probe, s.Name).Observe(s.Duration.Seconds())
		res := "success"
		if !s.OK {
			res = string(s.Class)
			if res == "" {
				res = "failure"
			}
		}
		m.steps.WithLabelValues(r.Probe, s.Name, res).Inc()
	}
	m.countRateLimited(r)
	for name, n := range r.Counts {
		switch {
		case name == probes.CountTokenRefresh:
			m.tokenRefresh.WithLabelValues(r.Probe, r.Tenant).Add(float64(n))
		case name == probes.CountCleanupFailure:
			m.cleanupFail.WithLabelValues(r.Probe).Add(float64(n))
		case strings.HasPrefix(name, probes.CountRevocationPrefix):
			m.revocations.WithLabelValues(strings.TrimPrefix(name, probes.CountRevocationPrefix)).Add(float64(n))
		case strings.HasPrefix(name, probes.CountLoginPrefix):
			// login:<method>:<result>
			parts := strings.SplitN(name, ":", 3)
			if len(parts) == 3 {
				m.logins.WithLabelValues(parts[1], parts[2]).Add(float64(n))
			}
		}
	}
	d, hasDelivery := r.Signals[probes.SignalDeliverySeconds]
	if hasDelivery {
		m.delivery.WithLabelValues(r.Probe).Observe(d)
	}

	series := ResultSeries(r)
	k := key{r.Probe, r.Tenant}
	m.mu.Lock()
	l := m.state[k]
	if l == nil {
		l = &last{}
		m.state[k] = l
	}
	l.set(series)
	l.build(k, m.pair)
	m.mu.Unlock()

	m.obsMu.Lock()
	obs := m.observers[r.Type]
	m.obsMu.Unlock()
	for _, o := range obs {
		o(r)
	}
}

// countRateLimited adds the run's 429s, by step, to mxprobe_rate_limited_total.
func (m *Metrics) countRateLimited(r probes.Result) {
	for name, n := range r.Counts {
		switch {
		case name == probes.CountRateLimited:
			m.rateLimited.WithLabelValues(r.Probe, r.Tenant, "").Add(float64(n))
		case strings.HasPrefix(name, probes.CountRateLimited+":"):
			m.rateLimited.WithLabelValues(r.Probe, r.Tenant, strings.TrimPrefix(name, probes.CountRateLimited+":")).Add(float64(n))
		}
	}
}

// SetReload records the outcome of a configuration (re)load.
func (m *Metrics) SetReload(ok bool) {
	if ok {
		m.reloadOK.Set(1)
		m.reloadTime.Set(float64(time.Now().UnixNano()) / 1e9)
	} else {
		m.reloadOK.Set(0)
	}
}

// SetConfigured records the configured probes and prunes the series of
// probes and tenants that are no longer configured.
func (m *Metrics) SetConfigured(jobs []*probes.Job) {
	m.configuredRun.Reset()
	m.interval.Reset()
	now := time.Now()
	keep := map[key]bool{}
	for _, j := range jobs {
		m.configuredRun.WithLabelValues(j.Name, j.Type).Set(float64(len(j.Subjects)))
		// As the scheduler: disabled or unscheduled jobs run on demand only.
		if !j.Disabled && j.Schedule != nil && len(j.Subjects) > 0 {
			m.interval.WithLabelValues(j.Name).Set(ScheduleInterval(j.Schedule, now).Seconds())
		}
		for _, s := range j.Subjects {
			keep[key{j.Name, s}] = true
		}
		m.initCounters(j)
	}
	m.mu.Lock()
	pruned := false
	for k := range m.state {
		if !keep[k] {
			delete(m.state, k)
			m.runs.DeletePartialMatch(prometheus.Labels{"probe": k.probe, "tenant": k.tenant})
			m.rateLimited.DeletePartialMatch(prometheus.Labels{"probe": k.probe, "tenant": k.tenant})
			m.tokenRefresh.DeleteLabelValues(k.probe, k.tenant)
			pruned = true
		}
	}
	if pruned { // let the label pairs of removed tenants go
		m.pairs = map[[2]string]*dto.LabelPair{}
		for k, l := range m.state {
			l.build(k, m.pair)
		}
	}
	m.mu.Unlock()
}

// ScheduleInterval is the longest time between two consecutive starts of s
// after from: the delay of an @every schedule, and for a cron schedule the
// longest gap over the following eight days (a week covers the day-of-week
// patterns; the day-of-month ones are long anyway), so that "0 9 * * 1-5"
// gives the weekend's 72 hours and a staleness alert compared with it does
// not fire every Monday. A schedule that fires once or never in that time
// gives the gap between its next two starts.
func ScheduleInterval(s cron.Schedule, from time.Time) time.Duration {
	if every, ok := s.(cron.ConstantDelaySchedule); ok {
		return every.Delay
	}
	// maxFirings bounds the work for second-resolution specs (a week of
	// "* * * * * *" would be 604,800 steps); they repeat within minutes.
	const horizon, maxFirings = 8 * 24 * time.Hour, 20_000
	prev := s.Next(from)
	if prev.IsZero() {
		return 0
	}
	var longest time.Duration
	for i := 0; i < maxFirings; i++ {
		next := s.Next(prev)
		if next.IsZero() {
			break
		}
		longest = max(longest, next.Sub(prev))
		if next.Sub(from) > horizon {
			break
		}
		prev = next
	}
	return longest
}

// initCounters creates the counters a job can increment at 0, so that they
// exist before their first event (a dashboard shows 0, not "No data", and
// increase() sees the first event).
func (m *Metrics) initCounters(j *probes.Job) {
	dc, ok := j.Prober.(probes.DeclaredCounts)
	if !ok {
		return
	}
	for _, name := range dc.DeclaredCounts() {
		switch {
		case name == probes.CountCleanupFailure:
			m.cleanupFail.WithLabelValues(j.Name).Add(0)
		case name == probes.CountTokenRefresh:
			for _, s := range j.Subjects {
				m.tokenRefresh.WithLabelValues(j.Name, s).Add(0)
			}
		case strings.HasPrefix(name, probes.CountRateLimited+":"):
			step := strings.TrimPrefix(name, probes.CountRateLimited+":")
			for _, s := range j.Subjects {
				m.rateLimited.WithLabelValues(j.Name, s, step).Add(0)
			}
		}
	}
}

// The per-tenant gauges of the latest runs (success, durations, the failed
// step, ...) are the bulk of /metrics: 1,000 tenants × 4 probes are some
// 42,000 series. They are built once per run (Observe) as ready
// dto.Metrics with interned label pairs, and handed to the scrape as whole
// metric families by Gather, in the order the registry would sort them
// into: going through a Collector made every scrape write, copy, check and
// hash each series again, which was half of the scrape's time (see
// BenchmarkMetricsScrape1000x4). Their descriptors stay registered
// (lastCollector describes them and collects nothing), so the registry
// still refuses any other collector of the same names.

// gaugeFamily is one per-tenant gauge family.
type gaugeFamily struct {
	name, help string
	desc       *prometheus.Desc
}

// The per-tenant families, in the order of their names (Gather merges them
// with the registry's families by name).
const (
	famDeliveryLast = iota // mxprobe_message_delivery_last_seconds
	famFailedStep          // mxprobe_probe_failed_step
	famLastDuration        // mxprobe_probe_last_duration_seconds
	famLastRun             // mxprobe_probe_last_run_timestamp_seconds
	famLastStep            // mxprobe_probe_last_step_duration_seconds
	famLastSuccess         // mxprobe_probe_last_success_timestamp_seconds
	famSuccess             // mxprobe_probe_success
	famCount
)

func newGaugeFamily(name, help string, labels ...string) gaugeFamily {
	name = namespace + "_" + name
	return gaugeFamily{name: name, help: help, desc: prometheus.NewDesc(name, help, labels, nil)}
}

// lastFamilies are the per-tenant families, indexed by the fam constants.
func lastFamilies() [famCount]gaugeFamily {
	return [famCount]gaugeFamily{
		famDeliveryLast: newGaugeFamily("message_delivery_last_seconds",
			"Message delivery time measured by the last run.", "probe", "tenant"),
		famFailedStep: newGaugeFamily("probe_failed_step",
			"Present (1) while the last run failed, naming the failing step and failure class.", "probe", "tenant", "step", "class"),
		famLastDuration: newGaugeFamily("probe_last_duration_seconds",
			"Duration of the last run.", "probe", "tenant"),
		famLastRun: newGaugeFamily("probe_last_run_timestamp_seconds",
			"Start time of the last run that measured anything (a skipped run, or one refused with 429 before its first measured step, does not count).", "probe", "tenant"),
		famLastStep: newGaugeFamily("probe_last_step_duration_seconds",
			"Duration of each step of the last run (steps that did not run are absent).", "probe", "tenant", "step"),
		famLastSuccess: newGaugeFamily("probe_last_success_timestamp_seconds",
			"End time of the last successful run.", "probe", "tenant"),
		famSuccess: newGaugeFamily("probe_success",
			"Whether the last run that measured anything succeeded (1) or failed (0); a warning (rate limited) counts as success.", "probe", "tenant"),
	}
}

// lastCollector registers the descriptors of the per-tenant families; their
// series come from Gather.
type lastCollector Metrics

func (c *lastCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.families {
		ch <- f.desc
	}
}

func (c *lastCollector) Collect(chan<- prometheus.Metric) {}

// pair returns the interned label pair name=value (m.mu held).
func (m *Metrics) pair(name, value string) *dto.LabelPair {
	k := [2]string{name, value}
	p := m.pairs[k]
	if p == nil {
		p = &dto.LabelPair{Name: &k[0], Value: &k[1]}
		m.pairs[k] = p
	}
	return p
}

// gaugeMetric is a ready series: labels sorted by name, as the registry
// hands them out, and a fixed value.
func gaugeMetric(v float64, labels ...*dto.LabelPair) *dto.Metric {
	return &dto.Metric{Label: labels, Gauge: &dto.Gauge{Value: &v}}
}

// set makes l the latest run's, from its series (ResultSeries, the
// translation /probe uses too), under /metrics's rules: the failed step is
// "run" when the run named none, the last success stays until a run
// succeeds, and the delivery time is the run's message_delivery_seconds
// signal.
func (l *last) set(series []RunSeries) {
	l.steps = nil
	l.failedStep, l.failedClass = "", ""
	l.hasDelivery = false
	for _, s := range series {
		switch s.Kind {
		case RunSuccess:
			l.success = s.Value
		case RunDuration:
			l.duration = s.Value
		case RunStarted:
			l.started = s.Value
		case RunFailure:
			l.failedClass, l.failedStep = s.Label("class"), s.Label("step")
			if l.failedStep == "" {
				l.failedStep = "run"
			}
		case RunStepDuration:
			l.steps = append(l.steps, s)
		case RunSignal:
			if s.Name == probes.SignalDeliverySeconds && len(s.Labels) == 0 {
				l.delivery, l.hasDelivery = s.Value, true
			}
		}
	}
	if l.success == 1 {
		l.lastSuccess = l.started + l.duration
	}
}

// build makes the series of l once per run, so a scrape only hands out
// ready metrics. Series handed out are never changed afterwards (a scrape
// may still be encoding them): the next run builds new ones.
func (l *last) build(k key, pair func(name, value string) *dto.LabelPair) {
	probe, tenant := pair("probe", k.probe), pair("tenant", k.tenant)
	var ms [famCount]*dto.Metric
	ms[famSuccess] = gaugeMetric(l.success, probe, tenant)
	ms[famLastDuration] = gaugeMetric(l.duration, probe, tenant)
	ms[famLastRun] = gaugeMetric(l.started, probe, tenant)
	if l.lastSuccess > 0 {
		ms[famLastSuccess] = gaugeMetric(l.lastSuccess, probe, tenant)
	}
	if l.success == 0 {
		ms[famFailedStep] = gaugeMetric(1, pair("class", l.failedClass), probe, pair("step", l.failedStep), tenant)
	}
	if l.hasDelivery {
		ms[famDeliveryLast] = gaugeMetric(l.delivery, probe, tenant)
	}
	l.metrics = ms
	l.stepMetrics = make(map[string]*dto.Metric, len(l.steps))
	for _, s := range l.steps { // one per step name (ResultSeries)
		name := s.Label("step")
		l.stepMetrics[name] = gaugeMetric(s.Value, probe, pair("step", name), tenant)
	}
}

// Gather implements prometheus.Gatherer: the registry's families and the
// per-tenant ones, sorted by name. Serve /metrics from it, not from
// Registry (which holds every metric but the per-tenant gauges).
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := m.Registry.Gather()
	own := m.gatherLast()
	if len(own) == 0 {
		return mfs, err
	}
	out := make([]*dto.MetricFamily, 0, len(mfs)+len(own))
	i, j := 0, 0
	for i < len(mfs) || j < len(own) {
		if j == len(own) || (i < len(mfs) && mfs[i].GetName() < own[j].GetName()) {
			out = append(out, mfs[i])
			i++
		} else {
			out = append(out, own[j])
			j++
		}
	}
	return out, err
}

// gatherLast builds the per-tenant families from the series of the last
// runs, each in the registry's order: by label values in label-name order
// (probe, tenant; probe, step, tenant; class, probe, step, tenant).
func (m *Metrics) gatherLast() []*dto.MetricFamily {
	m.mu.RLock()
	defer m.mu.RUnlock()
	keys := make([]key, 0, len(m.state))
	for k := range m.state {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].probe != keys[b].probe {
			return keys[a].probe < keys[b].probe
		}
		return keys[a].tenant < keys[b].tenant
	})
	var series [famCount][]*dto.Metric
	for f := range series {
		if f == famLastStep {
			continue
		}
		for _, k := range keys {
			if s := m.state[k].metrics[f]; s != nil {
				series[f] = append(series[f], s)
			}
		}
	}
	// class first: the failed-step series sort by class, probe, step, tenant.
	sort.SliceStable(series[famFailedStep], func(a, b int) bool {
		return lessLabels(series[famFailedStep][a].Label, series[famFailedStep][b].Label)
	})
	// Step series: per probe, step by step, tenants in order.
	for lo := 0; lo < len(keys); {
		hi := lo
		names := map[string]bool{}
		for ; hi < len(keys) && keys[hi].probe == keys[lo].probe; hi++ {
			for name := range m.state[keys[hi]].stepMetrics {
				names[name] = true
			}
		}
		steps := make([]string, 0, len(names))
		for name := range names {
			steps = append(steps, name)
		}
		sort.Strings(steps)
		for _, name := range steps {
			for _, k := range keys[lo:hi] {
				if s, ok := m.state[k].stepMetrics[name]; ok {
					series[famLastStep] = append(series[famLastStep], s)
				}
			}
		}
		lo = hi
	}
	out := make([]*dto.MetricFamily, 0, famCount)
	for f := range series {
		if len(series[f]) == 0 {
			continue
		}
		fam := &m.families[f]
		out = append(out, &dto.MetricFamily{Name: &fam.name, Help: &fam.help, Type: dto.MetricType_GAUGE.Enum(), Metric: series[f]})
	}
	return out
}

// lessLabels orders two series of one family by their label values (the
// labels sorted by name, as built).
func lessLabels(a, b []*dto.LabelPair) bool {
	for i := range a {
		if i >= len(b) {
			return false
		}
		if va, vb := a[i].GetValue(), b[i].GetValue(); va != vb {
			return va < vb
		}
	}
	return len(a) < len(b)
}
