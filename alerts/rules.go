package alerts

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

// rule is a configured rule ready to evaluate.
type rule struct {
	cfg     config.AlertRule
	tenants map[string]bool // nil: all
	kind    string
	window  time.Duration
}

// newRule prepares c, a rule on a probe of type probeType ("" when the probe
// is not configured).
func newRule(c config.AlertRule, probeType string) *rule {
	c.Annotations = withRunbook(c, probeType)
	r := &rule{cfg: c, kind: c.Condition()}
	if len(c.Tenants) > 0 {
		r.tenants = map[string]bool{}
		for _, t := range c.Tenants {
			r.tenants[t] = true
		}
	}
	switch {
	case c.SuccessRatio != nil:
		r.window = c.SuccessRatio.Window.D()
	case c.Threshold != nil:
		r.window = c.Threshold.Window.D()
	}
	return r
}

func (r *rule) selects(res *probes.Result) bool {
	if res.Probe != r.cfg.Probe || res.Outcome == probes.OutcomeSkipped {
		return false
	}
	return r.tenants == nil || r.tenants[res.Tenant]
}

// Sample is one observation kept for windowed conditions.
type Sample struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// series is the evaluation memory of one (rule, tenant): persisted with the
// alert so a restart keeps counters, windows and the anomaly baseline.
type series struct {
	ConsecFail int       `json:"consec_fail,omitempty"`
	Samples    []Sample  `json:"samples,omitempty"`
	EWMAMean   float64   `json:"ewma_mean,omitempty"`
	EWMAVar    float64   `json:"ewma_var,omitempty"`
	EWMACount  int       `json:"ewma_count,omitempty"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
}

// verdict is one evaluation: bad says the trigger condition holds; ok says
// the series counts as recovered (for `failures` that is "this run
// succeeded", so a flapping probe does not resolve; elsewhere ok == !bad);
// known is false when there is not enough data to judge (nothing changes).
type verdict struct {
	bad, ok, known bool
	value          float64
}

// signalValue extracts a numeric signal from a Result.
func signalValue(res *probes.Result, signal string) (float64, bool) {
	switch {
	case signal == "success":
		if res.OK() {
			return 1, true
		}
		return 0, true
	case signal == "duration":
		return res.Duration.Seconds(), true
	case strings.HasPrefix(signal, "step:"):
		d, ok := res.StepDuration(strings.TrimPrefix(signal, "step:"))
		return d.Seconds(), ok
	}
	v, ok := res.Signals[signal]
	if ok && (math.IsNaN(v) || math.IsInf(v, 0)) {
		return 0, false
	}
	return v, ok
}

// evaluate updates s with res and judges the rule.
func (r *rule) evaluate(s *series, res *probes.Result, now time.Time) verdict {
	s.LastSeen = now
	c := &r.cfg
	switch r.kind {
	case "failures":
		if res.OK() {
			s.ConsecFail = 0
		} else {
			s.ConsecFail++
		}
		return verdict{bad: s.ConsecFail >= c.Failures, ok: res.OK(), known: true, value: float64(s.ConsecFail)}
	case "success_ratio":
		v := 0.0
		if res.OK() {
			v = 1
		}
		s.add(now, v, r.window)
		if len(s.Samples) < c.SuccessRatio.MinSamples {
			return verdict{}
		}
		ratio := mean(s.Samples)
		bad := ratio < c.SuccessRatio.Below
		return verdict{bad: bad, ok: !bad, known: true, value: ratio}
	case "threshold":
		t := c.Threshold
		v, ok := signalValue(res, t.Signal)
		if !ok {
			return verdict{}
		}
		if t.Aggregate == "last" && t.Window <= 0 {
			s.Samples = append(s.Samples[:0], Sample{now, v})
		} else {
			s.add(now, v, r.window)
		}
		if len(s.Samples) < t.MinSamples {
			return verdict{}
		}
		agg := aggregate(s.Samples, t.Aggregate)
		bad := (t.Above != nil && agg > *t.Above) || (t.Below != nil && agg < *t.Below)
		return verdict{bad: bad, ok: !bad, known: true, value: agg}
	case "anomaly":
		a := c.Anomaly
		v, ok := signalValue(res, a.Signal)
		if !ok {
			return verdict{}
		}
		out := verdict{value: v}
		if s.EWMACount >= a.MinSamples {
			dev := math.Sqrt(s.EWMAVar)
			bad := v > s.EWMAMean+a.Deviations*dev && v-s.EWMAMean >= a.MinDelta
			out = verdict{bad: bad, ok: !bad, known: true, value: v}
		}
		s.ewma(v, a.Alpha)
		return out
	case "stale":
		return verdict{bad: false, ok: true, known: true}
	}
	return verdict{}
}

// staleVerdict judges a stale rule at a tick.
func (r *rule) staleVerdict(s *series, now time.Time, interval time.Duration) verdict {
	if interval <= 0 || s.LastSeen.IsZero() {
		return verdict{}
	}
	age := now.Sub(s.LastSeen)
	bad := age > time.Duration(r.cfg.Stale.Intervals*float64(interval))
	return verdict{bad: bad, ok: !bad, known: true, value: age.Seconds()}
}

func (s *series) add(now time.Time, v float64, window time.Duration) {
	s.Samples = append(s.Samples, Sample{now, v})
	cut := 0
	for cut < len(s.Samples) && now.Sub(s.Samples[cut].T) > window {
		cut++
	}
	if cut > 0 {
		s.Samples = append(s.Samples[:0], s.Samples[cut:]...)
	}
	// A hard cap keeps a misconfigured window from growing without bound.
	const maxSamples = 10000
	if len(s.Samples) > maxSamples {
		s.Samples = append(s.Samples[:0], s.Samples[len(s.Samples)-maxSamples:]...)
	}
}

// ewma updates the exponentially weighted mean and variance (West's
// incremental form).
func (s *series) ewma(v, alpha float64) {
	if s.EWMACount == 0 {
		s.EWMAMean, s.EWMAVar = v, 0
	} else {
		diff := v - s.EWMAMean
		incr := alpha * diff
		s.EWMAMean += incr
		s.EWMAVar = (1 - alpha) * (s.EWMAVar + diff*incr)
	}
	s.EWMACount++
}

func mean(ss []Sample) float64 {
	if len(ss) == 0 {
		return 0
	}
	sum := 0.0
	for _, s := range ss {
		sum += s.V
	}
	return sum / float64(len(ss))
}

func aggregate(ss []Sample, how string) float64 {
	if len(ss) == 0 {
		return 0
	}
	switch how {
	case "last":
		return ss[len(ss)-1].V
	case "mean":
		return mean(ss)
	case "max", "min":
		m := ss[0].V
		for _, s := range ss[1:] {
			if (how == "max" && s.V > m) || (how == "min" && s.V < m) {
				m = s.V
			}
		}
		return m
	}
	q, err := strconv.ParseFloat(strings.TrimPrefix(how, "p"), 64)
	if err != nil {
		return ss[len(ss)-1].V
	}
	return quantile(ss, q/100)
}

// quantile is the nearest-rank quantile of the samples.
func quantile(ss []Sample, q float64) float64 {
	vals := make([]float64, len(ss))
	for i, s := range ss {
		vals[i] = s.V
	}
	sort.Float64s(vals)
	rank := int(math.Ceil(q*float64(len(vals)))) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(vals) {
		rank = len(vals) - 1
	}
	return vals[rank]
}
