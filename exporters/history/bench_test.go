package history

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// roundtripResult is a round trip's Result as the probe records it: a dozen
// steps, a delivery signal, the lateness, a few counts.
func roundtripResult(tenant string, at time.Time, fail bool) probes.Result {
	r := probes.Result{Probe: "roundtrip", Type: "roundtrip", Tenant: tenant, Outcome: probes.OutcomeSuccess,
		Started: at, Duration: 180 * time.Millisecond, Method: "password"}
	for i, s := range []string{"login", "peer_login", "journal", "create_room", "invite", "join", "sync", "send", "receive", "power_levels", "peer_leave", "bot_leave", "peer_forget", "bot_forget"} {
		r.Steps = append(r.Steps, probes.Step{Name: s, Duration: time.Duration(5+i) * time.Millisecond, OK: true, Status: 200})
	}
	if fail {
		r.Outcome, r.Class, r.FailedStep, r.Error = probes.OutcomeFailure, probes.ClassHTTP5xx, "send", "HTTP 502"
	}
	r.SetSignal(probes.SignalDeliverySeconds, 0.04)
	r.SetSignal(probes.LatenessKey, 0.001)
	r.AddCount("login:password:success", 1)
	return r
}

// BenchmarkHistoryFull25000Tenants is the history of a replica of 25,000
// tenants in its steady state: every probe and tenant (a round trip here)
// holding history_size (60) runs, one in 25 failed. It reports the heap
// the store holds per probe and tenant, and for 50,000 of them (25,000
// tenants × 2 probes).
func BenchmarkHistoryFull25000Tenants(b *testing.B) {
	const keys, size = 25000, 60
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		s := New(size)
		t0 := time.Unix(1_800_000_000, 0)
		names := make([]string, keys)
		for k := range names {
			names[k] = fmt.Sprintf("t%06d", k)
		}
		ok, failed := roundtripResult("", t0, false), roundtripResult("", t0, true)
		for n := range size {
			for k, name := range names {
				r := ok
				if (n+k)%25 == 0 {
					r = failed
				}
				r.Tenant, r.Started = name, t0.Add(time.Duration(n)*time.Minute)
				s.Observe(r)
			}
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		if e, ok := s.Get("roundtrip", "t000001"); !ok || len(e.Recent) != size {
			b.Fatalf("history of t000001: %d runs", len(e.Recent))
		}
		b.ReportMetric(held/keys, "B/key")
		b.ReportMetric(held*2/keys*25000/1e6, "MB/50000-keys")
		runtime.KeepAlive(s)
	}
}
