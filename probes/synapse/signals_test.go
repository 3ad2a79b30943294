package synapse

import (
	"math"
	"testing"

	"github.com/mxprobe/mxprobe/internal/config"
	sr "github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// TestNewSignalsOnReferencePages is "Done when" 4 (the probe side): every
// signal added for Synapse's own dashboard equals the independent value, on
// the healthy and on the degraded pair.
func TestNewSignalsOnReferencePages(t *testing.T) {
	for _, pair := range [][2]string{{"healthy_t0", "healthy_t60"}, {"healthy_t0", "degraded_t60"}} {
		t.Run(pair[1], func(t *testing.T) {
			d := derivePair(t, pair[0], pair[1], Options{})
			want, err := sr.ExpectNewSignals(naive(t, pair[0]), naive(t, pair[1]), 60, DefaultTopCaches)
			if err != nil {
				t.Fatal(err)
			}
			for name, v := range want {
				if math.IsNaN(v) {
					t.Fatalf("%s: independent value is NaN", name)
				}
				relEq(t, name, d.Signals, v)
			}
			t.Logf("%d new signals checked, e.g. lag %g events, fed queue %g EDUs, tick p99 %g s, push failure ratio %g",
				len(want), want[SigProcessingLagEvents], want[SigFedQueueEDUs], want[SigReactorTickP99], want[SigPushFailRatio])
		})
	}
}

// TestMinRequests: a ratio over fewer requests than min_requests is not
// judged; from min_requests on it is.
func TestMinRequests(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	th := map[string]config.Threshold{"http_5xx_ratio": {Fail: f(0.05)}}
	sig := map[string]float64{
		Sig5xxRatio + ":QuietServlet":          1,
		SigResponsesInWindow + ":QuietServlet": 1,
		Sig5xxRatio + ":BusyServlet":           0.1,
		SigResponsesInWindow + ":BusyServlet":  20,
	}
	fails, _ := Evaluate(sig, th, Options{})
	if len(fails) != 1 || fails[0] != "http_5xx_ratio:BusyServlet = 0.1 above 0.05" {
		t.Errorf("fails %v", fails)
	}
	fails, _ = Evaluate(sig, th, Options{MinRequests: 1})
	if len(fails) != 2 {
		t.Errorf("min_requests 1: fails %v", fails)
	}
}
