package history

import (
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
		s.Observe(probes.Result{Probe: "p", Tenant: "a", Outcome: out, Started: t0.Add(time.Duration(i) * time.Second)})
	}
	s.Observe(probes.Result{Probe: "p", Tenant: "a", Outcome: probes.OutcomeSkipped})
	e, ok := s.Get("p", "a")
	if !ok || len(e.Recent) != 3 || e.Recent[0].Started().Unix() != 2 || e.Latest.Started.Unix() != 4 {
		t.Fatalf("entry: %+v", e)
	}
	if e.LastFailure == nil || e.LastFailure.Started.Unix() != 1 {
		t.Fatal("last failure pushed out of the ring")
	}
	s.SetSize(2)
	e, _ = s.Get("p", "a")
	if len(e.Recent) != 2 || e.Recent[0].Started().Unix() != 3 || e.Latest.Started.Unix() != 4 {
		t.Fatalf("after shrink: %+v", e.Recent)
	}
	s.SetSize(5)
	s.Observe(probes.Result{Probe: "p", Tenant: "a", Outcome: probes.OutcomeSuccess, Started: t0.Add(9 * time.Second)})
	e, _ = s.Get("p", "a")
	if len(e.Recent) != 3 || e.Latest.Started.Unix() != 9 || e.Recent[0].Started().Unix() != 3 {
		t.Fatalf("after grow: %+v", e.Recent)
	}
	s.Prune(func(k Key) bool { return false })
	if len(s.Latest()) != 0 {
		t.Fatal("prune kept entries")
	}
}
