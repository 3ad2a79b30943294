package history

import (
	"reflect"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

func TestRingKeepsNewestAndResizes(t *testing.T) {
	s := New(3)
	t0 := time.Unix(0, 0)
	for i := range 5 {
		out := probes.OutcomeSuccess
		if i == 1 {
			out = probes.OutcomeFailure
		}
		// The duration tells the runs apart in Recent.
		s.Observe(probes.Result{Probe: "p", Tenant: "a", Outcome: out, Started: t0.Add(time.Duration(i) * time.Second),
			Duration: time.Duration(i) * time.Millisecond})
	}
	s.Observe(probes.Result{Probe: "p", Tenant: "a", Outcome: probes.OutcomeSkipped})
	e, ok := s.Get("p", "a")
	if !ok || len(e.Recent) != 3 || e.Recent[0].Duration() != 2*time.Millisecond || e.Latest.Started.Unix() != 4 {
		t.Fatalf("entry: %+v", e)
	}
	if e.LastFailure == nil || e.LastFailure.Started.Unix() != 1 {
		t.Fatal("last failure pushed out of the ring")
	}
	s.SetSize(2)
	e, _ = s.Get("p", "a")
	if len(e.Recent) != 2 || e.Recent[0].Duration() != 3*time.Millisecond || e.Latest.Started.Unix() != 4 {
		t.Fatalf("after shrink: %+v", e.Recent)
	}
	s.SetSize(5)
	s.Observe(probes.Result{Probe: "p", Tenant: "a", Outcome: probes.OutcomeSuccess, Started: t0.Add(9 * time.Second), Duration: 9 * time.Millisecond})
	e, _ = s.Get("p", "a")
	if len(e.Recent) != 3 || e.Latest.Started.Unix() != 9 || e.Recent[0].Duration() != 3*time.Millisecond {
		t.Fatalf("after grow: %+v", e.Recent)
	}
	s.Prune(func(k Key) bool { return false })
	if len(s.Latest()) != 0 {
		t.Fatal("prune kept entries")
	}
}

// TestLatestKeptWhole: the latest run comes back as it was observed, its
// steps' names, classes, statuses, errors and details, signals and counts
// included, however compactly it is kept.
func TestLatestKeptWhole(t *testing.T) {
	s := New(5)
	r := probes.Result{Probe: "roundtrip", Type: "roundtrip", Tenant: "a", Outcome: probes.OutcomeFailure,
		Class: probes.ClassHTTP5xx, FailedStep: "send", Error: "HTTP 502", Started: time.Unix(100, 5), Duration: 1500 * time.Millisecond,
		Method: "password",
		Steps: []probes.Step{
			{Name: "login", Duration: 12 * time.Millisecond, OK: true, Status: 200},
			{Name: "send", Duration: 3 * time.Millisecond, Class: probes.ClassHTTP5xx, Error: "HTTP 502", Status: 502, Detail: "retried once"},
			{Name: "odd", Duration: time.Nanosecond, Status: 70000},
		},
		Signals: map[string]float64{probes.SignalDeliverySeconds: 0.25},
		Counts:  map[string]int{probes.CountRateLimited + ":send": 2}}
	s.Observe(r)
	e, ok := s.Get("roundtrip", "a")
	if !ok {
		t.Fatal("no entry")
	}
	if !reflect.DeepEqual(e.Latest, r) {
		t.Fatalf("latest run changed:\ngot  %+v\nwant %+v", e.Latest, r)
	}
	if e.LastFailure == nil || e.LastFailure.Error != "HTTP 502" || e.LastFailure.Steps != nil {
		t.Fatalf("last failure %+v", e.LastFailure)
	}
}

// TestRunKeepsDurationAndOutcome: a Run keeps the duration to the
// microsecond (saturating beyond its range) and the outcome.
func TestRunKeepsDurationAndOutcome(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		o    probes.Outcome
		want time.Duration
	}{
		{1500 * time.Microsecond, probes.OutcomeSuccess, 1500 * time.Microsecond},
		{time.Minute, probes.OutcomeWarning, time.Minute},
		{time.Hour, probes.OutcomeFailure, runMaxUS * time.Microsecond},
		{-time.Second, probes.OutcomeFailure, 0},
	} {
		r := newRun(probes.Result{Duration: c.d, Outcome: c.o})
		if r.Duration() != c.want || r.Outcome() != c.o || r.OK() != (c.o != probes.OutcomeFailure) {
			t.Errorf("%s %s: got %s %s", c.d, c.o, r.Duration(), r.Outcome())
		}
	}
}
