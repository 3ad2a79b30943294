package synapse

import (
	"testing"
	"time"
)

// TestDeriveFirstScrapeGaugesOnly: without a window (no previous scrape, or
// one taken at the same time) Derive reports the page and the gauges and
// none of the signals that need a window.
func TestDeriveFirstScrapeGaugesOnly(t *testing.T) {
	t0 := time.Unix(1767268800, 0)
	s0, err := Parse(page(t, "healthy_t0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s0.Time = t0
	same, err := Parse(page(t, "healthy_t60"), s0)
	if err != nil {
		t.Fatal(err)
	}
	same.Time = t0
	for name, d := range map[string]Derived{"first": Derive(nil, s0, Options{}), "no window": Derive(s0, same, Options{})} {
		if !d.Baseline || d.Resets != 0 {
			t.Errorf("%s: Baseline %v, Resets %d; want a baseline without resets", name, d.Baseline, d.Resets)
		}
		for _, s := range []string{SigPageBytes, SigProcesses, SigProcessesUp, SigStagingPDUs, SigRSS, SigFDs, SigReactorLastSeen, SigForwardExtremP99} {
			if _, ok := d.Signals[s]; !ok {
				t.Errorf("%s: %s missing", name, s)
			}
		}
		for _, s := range []string{SigWindow, SigRequests, SigDBTxnRate, SigReactorTickP99, SigCPU, SigFedOutRate, SigCacheHitRatio, SigRestarted, SigCounterResets} {
			if v, ok := d.Signals[s]; ok {
				t.Errorf("%s: %s = %g, want none without a window", name, s, v)
			}
		}
	}
}
