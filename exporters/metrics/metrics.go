// Package metrics turns probe Results into Prometheus metrics. It is a
// probes.Sink: it knows Results, not Matrix.
//
// Cardinality is bounded on purpose: per-tenant series are gauges and
// counters of the last run; histograms aggregate over tenants (per probe and
// step), so 1,000 tenants stay cheap to scrape. No room id, user id or error
// text is ever a label.
package metrics

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
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
	steps         *prometheus.CounterVec
	logins        *prometheus.CounterVec
	cleanupFail   *prometheus.CounterVec
	revocations   *prometheus.CounterVec
	reloadOK      prometheus.Gauge
	reloadTime    prometheus.Gauge
	configuredRun *prometheus.GaugeVec
	interval      *prometheus.GaugeVec

	// tenants are the per-tenant series (tenants.go), families their
	// families.
	tenants  tenantStore
	families [famCount]tenantFamily
	// order is the families' indexes in name order.
	order []int
	// gzips are gzip writers for Handler to reuse (each holds a
	// compressor of some 800 KB).
	gzips sync.Pool

	// observers see the Results of one probe type each (AddObserver).
	obsMu     sync.Mutex
	observers map[string][]func(probes.Result)
}

type key struct{ probe, tenant string }

// New builds the sink and registers every collector, including the Go and
// process collectors and mxprobe_build_info.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, families: tenantFamilies()}
	m.order = familyOrder(&m.families)
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
	m.steps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "probe_step_total",
		Help: "Probe steps that ran, by result: success or the failure class.",
	}, []string{"probe", "step", "result"})
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "login_total",
		Help: "Logins performed by probes, by method and result.",
	}, []string{"method", "result"})
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
		m.duration, m.stepDuration, m.delivery, m.lateness, m.steps, m.logins,
		m.cleanupFail, m.revocations, m.reloadOK, m.reloadTime, m.configuredRun, m.interval,
		(*tenantCollector)(m),
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
	k := key{r.Probe, r.Tenant}
	measured := r.Outcome != probes.OutcomeSkipped && !r.MeasuredNothing()
	var series []RunSeries
	if measured {
		m.observeAggregates(r)
		series = ResultSeries(r)
	}
	// A skipped run only counts; one refused before measuring anything (a
	// 429 at a login) counts its 429s too, and success, latencies and last
	// success stay as they were.
	m.tenants.update(k, func(c *tenantSeries) {
		if i := resultIndex(r.Outcome); i >= 0 {
			c.runs[i]++
			c.runsSeen |= 1 << i
		}
		if r.Outcome == probes.OutcomeSkipped {
			return
		}
		for name, n := range r.Counts {
			switch {
			case name == probes.CountRateLimited:
				c.addRate("", float64(n))
			case strings.HasPrefix(name, probes.CountRateLimited+":"):
				c.addRate(escapeLabel(strings.TrimPrefix(name, probes.CountRateLimited+":")), float64(n))
			case name == probes.CountTokenRefresh && measured:
				c.refresh += float64(n)
				c.hasRefresh = true
			}
		}
		if measured {
			c.setRun(series, m.tenants.intern)
		}
	})
	if !measured {
		return
	}
	m.obsMu.Lock()
	obs := m.observers[r.Type]
	m.obsMu.Unlock()
	for _, o := range obs {
		o(r)
	}
}

// observeAggregates adds a measured run to the metrics over all tenants.
func (m *Metrics) observeAggregates(r probes.Result) {
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
	for name, n := range r.Counts {
		switch {
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
	if d, ok := r.Signals[probes.SignalDeliverySeconds]; ok {
		m.delivery.WithLabelValues(r.Probe).Observe(d)
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
	m.tenants.prune(keep)
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
// increase() sees the first event). The zeros of a job's 429 counters are
// one slice shared by all its tenants until one meets a 429.
func (m *Metrics) initCounters(j *probes.Job) {
	dc, ok := j.Prober.(probes.DeclaredCounts)
	if !ok {
		return
	}
	var zeros []stepValue
	refresh := false
	for _, name := range dc.DeclaredCounts() {
		switch {
		case name == probes.CountCleanupFailure:
			m.cleanupFail.WithLabelValues(j.Name).Add(0)
		case name == probes.CountTokenRefresh:
			refresh = true
		case strings.HasPrefix(name, probes.CountRateLimited+":"):
			zeros = append(zeros, stepValue{step: escapeLabel(strings.TrimPrefix(name, probes.CountRateLimited+":"))})
		}
	}
	slices.SortFunc(zeros, func(a, b stepValue) int { return strings.Compare(a.step, b.step) })
	zeros = slices.CompactFunc(zeros, func(a, b stepValue) bool { return a.step == b.step })
	if len(zeros) == 0 && !refresh {
		return
	}
	for _, s := range j.Subjects {
		m.tenants.update(key{j.Name, s}, func(c *tenantSeries) {
			c.hasRefresh = c.hasRefresh || refresh
			if len(c.rate) == 0 {
				c.rate = zeros
				return
			}
			for _, z := range zeros {
				if _, found := slices.BinarySearchFunc(c.rate, z.step, func(sv stepValue, s string) int { return strings.Compare(sv.step, s) }); !found {
					c.addRate(z.step, 0)
				}
			}
		})
	}
}
