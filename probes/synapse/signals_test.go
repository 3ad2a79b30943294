package synapse

import (
	"fmt"
	"math"
	"testing"
	"time"

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
	th := map[string]Threshold{"http_5xx_ratio": {Fail: f(0.05)}}
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

// TestNoAliasesSynapseNeverHad: synapse_http_server_request_count and
// synapse_http_server_requests are not Synapse metrics, and
// synapse_http_server_response_count_total has no code label: a page with
// only these gives no request rate and no (falsely 0 %) 5xx ratio.
func TestNoAliasesSynapseNeverHad(t *testing.T) {
	pg := func(n int) []byte {
		return []byte(fmt.Sprintf(`# TYPE synapse_http_server_response_count_total counter
synapse_http_server_response_count_total{method="GET",servlet="SyncRestServlet",tag="",server_name="x"} %d
# TYPE synapse_http_server_request_count counter
synapse_http_server_request_count{method="GET",servlet="SyncRestServlet"} %d
# TYPE synapse_http_server_requests counter
synapse_http_server_requests{method="GET",servlet="SyncRestServlet"} %d
`, n, n, n))
	}
	s0, err := Parse(pg(100), nil)
	if err != nil {
		t.Fatal(err)
	}
	s0.Time = t0
	s1, err := Parse(pg(200), s0)
	if err != nil {
		t.Fatal(err)
	}
	s1.Time = t0.Add(time.Minute)
	d := Derive(s0, s1, Options{})
	for _, k := range []string{SigRequests, Sig5xxRatio, SigRequestsReceived, SigRequests + ":SyncRestServlet", Sig5xxRatio + ":SyncRestServlet"} {
		if v, ok := d.Signals[k]; ok {
			t.Errorf("%s = %g from families Synapse does not have (or without a code label)", k, v)
		}
	}
}
