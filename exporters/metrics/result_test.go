package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// TestResultSeries: the one translation of a Result, as both /metrics and
// /probe read it: a repeated step keeps its first record, a failure names
// class and step (as given), signals come sorted with their part label on
// every member of a family with parts, and of signals naming one series
// the first counts.
func TestResultSeries(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	r := probes.Result{Probe: "rt", Tenant: "acme", Outcome: probes.OutcomeFailure, Class: probes.ClassTimeout, FailedStep: "receive",
		Started: t0, Duration: 1500 * time.Millisecond,
		Steps: []probes.Step{{Name: "login", OK: true, Duration: time.Second}, {Name: "send", OK: true, Duration: 100 * time.Millisecond},
			{Name: "send", OK: false, Duration: 900 * time.Millisecond}, {Name: "receive", Duration: 400 * time.Millisecond}},
		Signals: map[string]float64{"ratio:b": 2, "ratio": 1, "ratio:": 3, "9 odd": 4, "delivery": 0.5}}
	var got []string
	for _, s := range ResultSeries(r) {
		got = append(got, fmt.Sprintf("%d %s %v %g", s.Kind, s.Name, s.Labels, s.Value))
	}
	want := []string{
		"0  [] 0", "1  [] 1.5", "2  [] 1.7e+09", "3  [] 0",
		"4  [[class timeout] [step receive]] 1",
		"5  [[step login]] 1", "6  [[step login]] 1",
		"5  [[step send]] 0.1", "6  [[step send]] 1",
		"5  [[step receive]] 0.4", "6  [[step receive]] 0",
		"7 __odd [] 4", "7 delivery [] 0.5",
		"7 ratio [[part ]] 1", "7 ratio [[part b]] 2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	r.Outcome, r.Class, r.FailedStep = probes.OutcomeWarning, "", ""
	for _, s := range ResultSeries(r) {
		if s.Kind == RunFailure || (s.Kind == RunSuccess && s.Value != 1) || (s.Kind == RunWarning && s.Value != 1) {
			t.Errorf("a warning run: %+v", s)
		}
	}
}
