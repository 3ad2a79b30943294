package metrics

import (
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/probes"
)

// The one translation from a Result to metric values. ResultSeries says
// what one run measured as series; /metrics keeps the latest run's per
// probe and tenant (the mxprobe_probe_* gauges, Observe), /probe exposes
// one run on its own (ResultCollector, the probe_* series of
// blackbox_exporter style). Each endpoint names the series its way, but
// what a series is (which steps count, what a failure's labels are, how a
// signal becomes a gauge) is decided here once.

// RunKind is the kind of one series of a run.
type RunKind int

const (
	// RunSuccess is 1 when the run succeeded (a warning, such as being
	// rate limited, counts as success), 0 when it failed.
	RunSuccess RunKind = iota
	// RunDuration is how long the run took, in seconds.
	RunDuration
	// RunStarted is when the run started, in Unix seconds.
	RunStarted
	// RunWarning is 1 when the run ended with a warning.
	RunWarning
	// RunFailure is 1, labelled class and step (the failed step, "" when
	// none was named), present only for a failed run.
	RunFailure
	// RunStepDuration is the duration of a step that ran, labelled step;
	// a step name repeated in one run (a retry, several homeservers) keeps
	// its first record.
	RunStepDuration
	// RunStepSuccess is 1 or 0 for each step of RunStepDuration.
	RunStepSuccess
	// RunSignal is a signal of the run (Result.Signals) as a gauge named
	// Name (the signal's name made a valid metric name); a signal about one
	// part ("name:part") carries the part as label part, and every member
	// of a family with parts has the label ("" for the whole).
	RunSignal
)

// RunSeries is one series of a run: labels are name/value pairs sorted by
// name.
type RunSeries struct {
	Kind   RunKind
	Name   string // RunSignal only
	Labels [][2]string
	Value  float64
}

// Label returns the value of the label name ("" when absent).
func (s RunSeries) Label(name string) string {
	for _, l := range s.Labels {
		if l[0] == name {
			return l[1]
		}
	}
	return ""
}

// ResultSeries is what the Result r measured, as series: success,
// duration, start, warning, failure, steps, then the signals sorted by name
// and part.
func ResultSeries(r probes.Result) []RunSeries {
	out := make([]RunSeries, 0, 5+2*len(r.Steps)+len(r.Signals))
	out = append(out,
		RunSeries{Kind: RunSuccess, Value: b2f(r.OK())},
		RunSeries{Kind: RunDuration, Value: r.Duration.Seconds()},
		RunSeries{Kind: RunStarted, Value: float64(r.Started.UnixNano()) / 1e9},
		RunSeries{Kind: RunWarning, Value: b2f(r.Outcome == probes.OutcomeWarning)},
	)
	if !r.OK() {
		out = append(out, RunSeries{Kind: RunFailure, Labels: [][2]string{{"class", string(r.Class)}, {"step", r.FailedStep}}, Value: 1})
	}
	seen := make(map[string]bool, len(r.Steps))
	for _, st := range r.Steps {
		if seen[st.Name] {
			continue
		}
		seen[st.Name] = true
		step := [][2]string{{"step", st.Name}}
		out = append(out,
			RunSeries{Kind: RunStepDuration, Labels: step, Value: st.Duration.Seconds()},
			RunSeries{Kind: RunStepSuccess, Labels: step, Value: b2f(st.OK)})
	}
	return appendSignals(out, r.Signals)
}

// appendSignals appends the signals as RunSignal series, by family name
// then part; of signals that name the same series ("x" and "x:", or names
// equal once made valid) the first in key order counts.
func appendSignals(out []RunSeries, signals map[string]float64) []RunSeries {
	if len(signals) == 0 {
		return out
	}
	keys := make([]string, 0, len(signals))
	for k := range signals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	type part struct {
		part string
		v    float64
	}
	fams := map[string][]part{}
	hasPart := map[string]bool{}
	seen := map[[2]string]bool{}
	for _, k := range keys {
		name, p, ok := strings.Cut(k, ":")
		name = sanitizeMetricName(name)
		if seen[[2]string{name, p}] {
			continue
		}
		seen[[2]string{name, p}] = true
		fams[name] = append(fams[name], part{p, signals[k]})
		if ok {
			hasPart[name] = true
		}
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, p := range fams[n] {
			s := RunSeries{Kind: RunSignal, Name: n, Value: p.v}
			if hasPart[n] {
				s.Labels = [][2]string{{"part", p.part}}
			}
			out = append(out, s)
		}
	}
	return out
}

// sanitizeMetricName makes s a valid metric name part: anything but
// letters, digits (not first) and '_' becomes '_'.
func sanitizeMetricName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
			b.WriteRune(r)
		case r >= '0' && r <= '9' && i > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// probeFamily is how /probe names and describes a kind of series.
type probeFamily struct{ name, help string }

// probeFamilies are /probe's names of the fixed kinds; a signal is
// probe_<name>. A signal never shadows one of these.
func probeFamilies() map[RunKind]probeFamily {
	return map[RunKind]probeFamily{
		RunSuccess:      {"probe_success", "Whether the probe run succeeded (a warning, such as being rate limited, counts as success)."},
		RunDuration:     {"probe_duration_seconds", "How long the probe run took."},
		RunWarning:      {"probe_warning", "Whether the run ended with a warning (rate limited)."},
		RunFailure:      {"probe_failure_info", "The failure class and failed step of a failed run."},
		RunStepDuration: {"probe_step_duration_seconds", "Duration of each step of the run."},
		RunStepSuccess:  {"probe_step_success", "Whether each step of the run succeeded."},
	}
}

// ResultCollector exposes the run r as /probe does (blackbox_exporter
// style): probe_success, probe_duration_seconds, probe_warning,
// probe_failure_info{class,step}, probe_step_duration_seconds{step},
// probe_step_success{step} and a gauge probe_<signal> per signal. It is
// unchecked (Describe sends nothing): register it on a registry of one
// request.
func ResultCollector(r probes.Result) prometheus.Collector { return resultCollector{r} }

type resultCollector struct{ res probes.Result }

func (resultCollector) Describe(chan<- *prometheus.Desc) {}

func (c resultCollector) Collect(ch chan<- prometheus.Metric) {
	fams := probeFamilies()
	reserved := make(map[string]bool, len(fams))
	for _, f := range fams {
		reserved[f.name] = true
	}
	descs := map[string]*prometheus.Desc{}
	desc := func(name, help string, labels [][2]string) *prometheus.Desc {
		if d := descs[name]; d != nil {
			return d
		}
		names := make([]string, len(labels))
		for i, l := range labels {
			names[i] = l[0]
		}
		d := prometheus.NewDesc(name, help, names, nil)
		descs[name] = d
		return d
	}
	for _, s := range ResultSeries(c.res) {
		var name, help string
		if s.Kind == RunSignal {
			name = "probe_" + s.Name
			if reserved[name] {
				continue // never shadow the run's own series
			}
			help = "Signal " + s.Name + " of the run."
		} else if f, ok := fams[s.Kind]; ok {
			name, help = f.name, f.help
		} else {
			continue // not on /probe (the start time)
		}
		values := make([]string, len(s.Labels))
		for i, l := range s.Labels {
			values[i] = l[1]
		}
		if m, err := prometheus.NewConstMetric(desc(name, help, s.Labels), prometheus.GaugeValue, s.Value, values...); err == nil {
			ch <- m
		}
	}
}
