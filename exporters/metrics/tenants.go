package metrics

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/probes"
)

// The per-tenant series (the latest run's gauges and the per-tenant
// counters) are the bulk of /metrics: 25,000 tenants × 2 probes are close
// to a million series. client_golang keeps each series of a vector as an
// object of its own with its label pairs (some 400 bytes), and a scrape
// through a Gatherer builds a protobuf object per series again: at that
// size the daemon held gigabytes. They live here instead, as one compact,
// immutable record per probe and tenant (tenantSeries: the values and the
// step names, ~0.5 KB), replaced whole by each run, and a scrape writes
// them straight into the answer (expose.go) without building anything per
// series. Their descriptors stay registered (tenantCollector), so the
// registry still refuses another collector of the same names.

// tenantFamily is one per-tenant metric family.
type tenantFamily struct {
	name, help string
	counter    bool
	desc       *prometheus.Desc
}

// The per-tenant families, in the order of their names (the scrape merges
// them with the registry's families by name).
const (
	famDeliveryLast = iota // mxprobe_message_delivery_last_seconds
	famFailedStep          // mxprobe_probe_failed_step
	famLastDuration        // mxprobe_probe_last_duration_seconds
	famLastRun             // mxprobe_probe_last_run_timestamp_seconds
	famLastStep            // mxprobe_probe_last_step_duration_seconds
	famLastSuccess         // mxprobe_probe_last_success_timestamp_seconds
	famRuns                // mxprobe_probe_runs_total
	famSuccess             // mxprobe_probe_success
	famRateLimited         // mxprobe_rate_limited_total
	famTokenRefresh        // mxprobe_token_refresh_total
	famCount
)

func newTenantFamily(name string, counter bool, help string, labels ...string) tenantFamily {
	name = namespace + "_" + name
	return tenantFamily{name: name, help: help, counter: counter, desc: prometheus.NewDesc(name, help, labels, nil)}
}

// tenantFamilies are the per-tenant families, indexed by the fam constants.
func tenantFamilies() [famCount]tenantFamily {
	return [famCount]tenantFamily{
		famDeliveryLast: newTenantFamily("message_delivery_last_seconds", false,
			"Message delivery time measured by the last run.", "probe", "tenant"),
		famFailedStep: newTenantFamily("probe_failed_step", false,
			"Present (1) while the last run failed, naming the failing step and failure class.", "probe", "tenant", "step", "class"),
		famLastDuration: newTenantFamily("probe_last_duration_seconds", false,
			"Duration of the last run.", "probe", "tenant"),
		famLastRun: newTenantFamily("probe_last_run_timestamp_seconds", false,
			"Start time of the last run that measured anything (a skipped run, or one refused with 429 before its first measured step, does not count).", "probe", "tenant"),
		famLastStep: newTenantFamily("probe_last_step_duration_seconds", false,
			"Duration of each step of the last run (steps that did not run are absent).", "probe", "tenant", "step"),
		famLastSuccess: newTenantFamily("probe_last_success_timestamp_seconds", false,
			"End time of the last successful run.", "probe", "tenant"),
		famRuns: newTenantFamily("probe_runs_total", true,
			"Probe runs by result: success, warning, failure, or skipped (the previous run was still going).", "probe", "tenant", "result"),
		famSuccess: newTenantFamily("probe_success", false,
			"Whether the last run that measured anything succeeded (1) or failed (0); a warning (rate limited) counts as success.", "probe", "tenant"),
		famRateLimited: newTenantFamily("rate_limited_total", true,
			"429 M_LIMIT_EXCEEDED answers met by probes, by the step that met them (empty: outside a named step).", "probe", "tenant", "step"),
		famTokenRefresh: newTenantFamily("token_refresh_total", true,
			"Sessions renewed after expiry or M_UNKNOWN_TOKEN (by refresh token or a fresh login).", "probe", "tenant"),
	}
}

// tenantCollector registers the descriptors of the per-tenant families;
// their series are written by the scrape itself.
type tenantCollector Metrics

func (c *tenantCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.families {
		ch <- f.desc
	}
}

func (c *tenantCollector) Collect(chan<- prometheus.Metric) {}

// numResults is the number of results of mxprobe_probe_runs_total.
const numResults = 4

// runResult is the result of index i of mxprobe_probe_runs_total, in the
// order of their names.
func runResult(i int) probes.Outcome {
	switch i {
	case 0:
		return probes.OutcomeFailure
	case 1:
		return probes.OutcomeSkipped
	case 2:
		return probes.OutcomeSuccess
	}
	return probes.OutcomeWarning
}

// resultIndex is the index of a run's result (-1: none of them).
func resultIndex(o probes.Outcome) int {
	for i := range numResults {
		if runResult(i) == o {
			return i
		}
	}
	return -1
}

// stepValue is a value by step name.
type stepValue struct {
	step string
	v    float64
}

// tenantSeries is what /metrics shows of one probe and tenant. A published
// record is never changed (a scrape may be writing it): every change makes
// a new one (next), which shares the unchanged slices.
//
// Its probe and tenant labels come from its key; step names are indexes
// into the store's table of names (stepDur): 50,000 records hold some 5 MB
// less than with a string per step.
type tenantSeries struct {
	success, duration, started, lastSuccess float64
	delivery, refresh                       float64
	// runs counts runs by result (runResult).
	runs [numResults]float64
	// failedStep and failedClass (escaped) label the failed-step series
	// while success is 0.
	failedStep, failedClass string
	// steps are the latest run's step durations, by step name.
	steps []stepDur
	// rate counts 429s by step (escaped), sorted by step; slices of zeros
	// are shared by every tenant of a job (initCounters).
	rate []stepValue
	// measured: a run that measured anything was recorded, so the gauges
	// of the latest run exist.
	measured, hasDelivery, hasRefresh bool
	// runsSeen marks the results that have a series.
	runsSeen uint8
}

// stepDur is a step's duration; i indexes the store's step names.
type stepDur struct {
	v float64
	i uint32
}

// next is a copy of s to change (a new record when s is nil).
func (s *tenantSeries) next() *tenantSeries {
	if s == nil {
		return &tenantSeries{}
	}
	c := *s
	return &c
}

// addRate adds n 429s of step (escaped) to c's counters: a new slice, as
// the old one may be shared or published.
func (c *tenantSeries) addRate(step string, n float64) {
	i, found := slices.BinarySearchFunc(c.rate, step, func(sv stepValue, s string) int { return strings.Compare(sv.step, s) })
	rate := make([]stepValue, len(c.rate), len(c.rate)+1)
	copy(rate, c.rate)
	if !found {
		rate = slices.Insert(rate, i, stepValue{step: step})
	}
	rate[i].v += n
	c.rate = rate
}

// setRun makes the run's series (ResultSeries, the translation /probe uses
// too) the latest under /metrics's rules: the failed step is "run" when
// the run named none, the last success stays until a run succeeds, and the
// delivery time is the run's message_delivery_seconds signal.
func (c *tenantSeries) setRun(series []RunSeries, intern func(step string) uint32) {
	c.measured = true
	c.steps = nil
	c.failedStep, c.failedClass = "", ""
	c.hasDelivery = false
	for _, s := range series {
		switch s.Kind {
		case RunSuccess:
			c.success = s.Value
		case RunDuration:
			c.duration = s.Value
		case RunStarted:
			c.started = s.Value
		case RunFailure:
			c.failedClass, c.failedStep = escapeLabel(s.Label("class")), escapeLabel(s.Label("step"))
			if c.failedStep == "" {
				c.failedStep = "run"
			}
		case RunStepDuration:
			c.steps = append(c.steps, stepDur{s.Value, intern(escapeLabel(s.Label("step")))})
		case RunSignal:
			if s.Name == probes.SignalDeliverySeconds && len(s.Labels) == 0 {
				c.delivery, c.hasDelivery = s.Value, true
			}
		}
	}
	if c.success == 1 {
		c.lastSuccess = c.started + c.duration
	}
}

// tenantSlot holds the current record of one probe and tenant; a scrape
// loads it without a lock.
type tenantSlot struct {
	k   key
	cur atomic.Pointer[tenantSeries]
}

// tenantStore is every probe and tenant's record, in the order a scrape
// writes them (by probe, then tenant).
type tenantStore struct {
	// mu guards slots and order, and serialises changes of records.
	mu    sync.Mutex
	slots map[key]*tenantSlot
	// order is slots sorted by key (nil: to be sorted again); a scrape
	// keeps the slice it got, so it is replaced, never changed.
	order []*tenantSlot
	// names are the step names (escaped) the records' steps index; only
	// ever appended to, under mu, so a copy of the slice stays valid.
	names   []string
	nameIdx map[string]uint32
}

// intern returns the index of step name s (mu held).
func (t *tenantStore) intern(s string) uint32 {
	if i, ok := t.nameIdx[s]; ok {
		return i
	}
	if t.nameIdx == nil {
		t.nameIdx = map[string]uint32{}
	}
	i := uint32(len(t.names))
	t.names = append(t.names, s)
	t.nameIdx[s] = i
	return i
}

// tenantRecord is a record with its labels, as a scrape writes it.
type tenantRecord struct {
	probe, tenant string // escaped
	*tenantSeries
}

// update replaces the record of k by what change makes of a copy of it
// (creating the record when there is none); change may intern step names.
func (t *tenantStore) update(k key, change func(*tenantSeries)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.slots == nil {
		t.slots = map[key]*tenantSlot{}
	}
	sl := t.slots[k]
	if sl == nil {
		sl = &tenantSlot{k: k}
		t.slots[k] = sl
		t.order = nil
	}
	c := sl.cur.Load().next()
	change(c)
	sl.cur.Store(c)
}

// prune drops the records of keys keep does not hold.
func (t *tenantStore) prune(keep map[key]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k := range t.slots {
		if !keep[k] {
			delete(t.slots, k)
			t.order = nil
		}
	}
}

// records returns the current records in scrape order, and the step names
// their steps index.
func (t *tenantStore) records() ([]tenantRecord, []string) {
	t.mu.Lock()
	order := t.order
	if order == nil && len(t.slots) > 0 {
		order = make([]*tenantSlot, 0, len(t.slots))
		for _, sl := range t.slots {
			order = append(order, sl)
		}
		slices.SortFunc(order, func(a, b *tenantSlot) int {
			if c := strings.Compare(a.k.probe, b.k.probe); c != 0 {
				return c
			}
			return strings.Compare(a.k.tenant, b.k.tenant)
		})
		t.order = order
	}
	t.mu.Unlock()
	out := make([]tenantRecord, len(order))
	for i, sl := range order {
		out[i] = tenantRecord{escapeLabel(sl.k.probe), escapeLabel(sl.k.tenant), sl.cur.Load()}
	}
	// After the loads: every name a loaded record indexes is in the copy.
	t.mu.Lock()
	names := t.names
	t.mu.Unlock()
	return out, names
}

// escapeLabel escapes a label value for the text formats (backslash,
// double quote, line feed); most values have nothing to escape and are
// returned as they are.
func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
