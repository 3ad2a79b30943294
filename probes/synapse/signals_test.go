package synapse

import (
	"math"
	"sort"
	"strconv"
	"testing"

	"github.com/mxprobe/mxprobe/internal/config"
	sr "github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// expectNewSignals computes, with the independent reader, the signals the
// issue added, for a pair of reference pages 60 s apart (no restart). It is
func expectNewSignals(t testing.TB, a, b string) map[string]float64 {
	t.Helper()
	p0, p1 := naive(t, a), naive(t, b)
	const w = 60.0
	e := map[string]float64{}
	one := func(name string) float64 {
		v := sr.Values(p1, name, nil)
		if len(v) != 1 {
			t.Fatalf("%s: %d samples", name, len(v))
		}
		return v[0]
	}
	// Event processing lag: persisted position minus each loop's position.
	persisted := one("synapse_event_persisted_position")
	worst := 0.0
	for _, s := range p1 {
		if s.Name == "synapse_event_processing_positions" {
			lag := math.Max(0, persisted-s.Value)
			e[SigProcessingLagEvents+":"+s.Labels["name"]] = lag
			worst = math.Max(worst, lag)
		}
	}
	e[SigProcessingLagEvents] = worst
	e[SigProcessingLagP95] = sr.HistogramQuantile(0.95, sr.BucketIncreases(p0, p1, "synapse_event_processing_lag_by_event", nil), false)
	e[SigFedQueuePDUs] = one("synapse_federation_transaction_queue_pending_pdus")
	e[SigFedQueueEDUs] = one("synapse_federation_transaction_queue_pending_edus")
	resp := sr.Increase(p0, p1, "synapse_http_matrixfederationclient_responses_total", nil)
	resp5 := sr.Increase(p0, p1, "synapse_http_matrixfederationclient_responses_total", sr.Code5xx)
	req := sr.Increase(p0, p1, "synapse_http_matrixfederationclient_requests_total", nil)
	e[SigFedOutRate] = resp / w
	attempts, failed := resp, resp5
	if req > resp {
		attempts, failed = req, resp5+req-resp
	}
	e[SigFedOutFailRatio] = failed / attempts
	e[SigRateLimitRejects] = sr.Increase(p0, p1, "synapse_rate_limit_reject_total", nil) / w
	e[SigHTTP429] = sr.Increase(p0, p1, "synapse_http_server_responses_total", func(l map[string]string) bool { return l["code"] == "429" }) / w
	// Caches: hits over lookups (synapse_util_caches_cache counts both).
	type cache struct {
		name          string
		lookups, hits float64
	}
	var cs []cache
	var allHits, allLookups float64
	for _, s := range p1 {
		if s.Name != "synapse_util_caches_cache" {
			continue
		}
		n := s.Labels["name"]
		byName := func(l map[string]string) bool { return l["name"] == n }
		c := cache{n, sr.Increase(p0, p1, "synapse_util_caches_cache", byName), sr.Increase(p0, p1, "synapse_util_caches_cache_hits", byName)}
		cs = append(cs, c)
		allHits += c.hits
		allLookups += c.lookups
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].lookups != cs[j].lookups {
			return cs[i].lookups > cs[j].lookups
		}
		return cs[i].name < cs[j].name
	})
	for _, c := range cs[:DefaultTopCaches] {
		e[SigCacheHitRatio+":"+c.name] = c.hits / c.lookups
	}
	e[SigCacheHitRatio] = allHits / allLookups
	e[SigReactorLastSeen] = one("python_twisted_reactor_last_seen")
	e[SigReactorTickP99] = sr.HistogramQuantile(0.99, sr.BucketIncreases(p0, p1, "python_twisted_reactor_tick_time", nil), false)
	bg := 0.0
	for _, v := range sr.Values(p1, "synapse_background_process_in_flight_count", nil) {
		bg += v
	}
	e[SigBgInFlight] = bg
	failedPush := sr.Increase(p0, p1, "synapse_http_httppusher_http_pushes_failed_total", nil)
	okPush := sr.Increase(p0, p1, "synapse_http_httppusher_http_pushes_processed_total", nil)
	e[SigPushFailures] = failedPush / w
	e[SigPushFailRatio] = failedPush / (failedPush + okPush)
	// Forward extremities: a gauge histogram, read as it stands.
	ext := map[float64]float64{}
	for _, s := range p1 {
		if s.Name == "synapse_forward_extremities_bucket" {
			le, err := strconv.ParseFloat(s.Labels["le"], 64)
			if err != nil {
				t.Fatal(err)
			}
			ext[le] = s.Value
		}
	}
	e[SigForwardExtremP99] = sr.HistogramQuantile(0.99, ext, false)
	e[SigForwardExtremOver10] = one("synapse_forward_extremities_gcount") - ext[10]
	e[SigStagingOldest] = one("synapse_federation_server_oldest_inbound_pdu_in_staging") / 1000
	return e
}

// TestNewSignalsOnReferencePages is "Done when" 4 (the probe side): every
// signal added for Synapse's own dashboard equals the independent value, on
// the healthy and on the degraded pair.
func TestNewSignalsOnReferencePages(t *testing.T) {
	for _, pair := range [][2]string{{"healthy_t0", "healthy_t60"}, {"healthy_t0", "degraded_t60"}} {
		t.Run(pair[1], func(t *testing.T) {
			d := derivePair(t, pair[0], pair[1], Options{})
			want := expectNewSignals(t, pair[0], pair[1])
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
