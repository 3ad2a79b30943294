package synapse

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// hostilePage is a metrics page with a 1.5 MB cache name (control
// characters included) that is the most looked-up cache, a 1.5 MB event
// processing loop name, extra further caches and extra/10 further loops; its
// counters grow with n.
func hostilePage(n, extra int) []byte {
	long := strings.Repeat("x", 1_500_000) + "\x1b[2J\x07"
	var b bytes.Buffer
	b.WriteString("# TYPE synapse_util_caches_cache gauge\n")
	fmt.Fprintf(&b, "synapse_util_caches_cache{name=\"%s\"} %d\n", long, 1_000_000*(n+1))
	fmt.Fprintf(&b, "synapse_util_caches_cache{name=\"getEvent\"} %d\n", 1000*(n+1))
	for i := range extra {
		fmt.Fprintf(&b, "synapse_util_caches_cache{name=\"c%04d\"} %d\n", i, n+1)
	}
	b.WriteString("# TYPE synapse_util_caches_cache_hits gauge\n")
	fmt.Fprintf(&b, "synapse_util_caches_cache_hits{name=\"%s\"} %d\n", long, 500_000*(n+1))
	fmt.Fprintf(&b, "synapse_util_caches_cache_hits{name=\"getEvent\"} %d\n", 900*(n+1))
	b.WriteString("# TYPE synapse_event_persisted_position gauge\nsynapse_event_persisted_position 100\n")
	b.WriteString("# TYPE synapse_event_processing_positions gauge\n")
	fmt.Fprintf(&b, "synapse_event_processing_positions{name=\"%s\"} 90\n", long)
	for i := range extra / 10 {
		fmt.Fprintf(&b, "synapse_event_processing_positions{name=\"loop%03d\"} 95\n", i)
	}
	return b.Bytes()
}

// TestHostileLabelsBounded: parsing and deriving a page with 1.5 MB label
// values and thousands of names keeps at most MaxLabelValue bytes of any
// label, no control character, at most MaxCaches caches and MaxLoops loops.
func TestHostileLabelsBounded(t *testing.T) {
	prev, err := Parse(hostilePage(0, 3000), nil)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := Parse(hostilePage(1, 3000), prev)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cur.order {
		for _, v := range []string{s.name, s.servlet, s.code, s.tag} {
			if len(v) > MaxLabelValue || strings.ContainsAny(v, "\x1b\x07") {
				t.Fatalf("label value of %d bytes kept: %.40q", len(v), v)
			}
		}
	}
	cur.Time = prev.Time.Add(time.Minute)
	d := Derive(prev, cur, Options{TopCaches: 5})
	caches, loops := 0, 0
	for k := range d.Signals {
		if len(k) > len(SigProcessingLagEvents)+1+MaxLabelValue {
			t.Errorf("signal name of %d bytes", len(k))
		}
		switch {
		case strings.HasPrefix(k, SigCacheHitRatio+":"):
			caches++
		case strings.HasPrefix(k, SigProcessingLagEvents+":"):
			loops++
		}
	}
	if caches != 5 || loops != MaxLoops {
		t.Errorf("%d cache signals (want 5), %d loop signals (want %d)", caches, loops, MaxLoops)
	}
	if _, ok := d.Signals[SigCacheHitRatio+":"+strings.Repeat("x", MaxLabelValue)]; !ok {
		t.Errorf("the most looked-up cache, cut to %d bytes, has no signal", MaxLabelValue)
	}
}

// TestHostileLabelScrapedRepeatedly is the review's repro compressed: a
// page with a 1.5 MB label scraped 60 times (a minute at one scrape a
// second; the probe's clock is advanced a second per scrape) with the last
// 60 results kept, as the history keeps them. What the results retain is
// bounded by count (deterministic), and the heap in use after GC stays
// within 10 % (live objects after GC) from the 10th scrape to the 60th (main grew by the label's
// size every scrape).
func TestHostileLabelScrapedRepeatedly(t *testing.T) {
	var n atomic.Int64
	pages := make([][]byte, 2)
	pages[0], pages[1] = hostilePage(0, 10), hostilePage(1, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(pages[n.Add(1)%2])
	}))
	defer srv.Close()
	sc := &Settings{URL: srv.URL + "/_synapse/metrics"}
	sc.ApplyDefaults()
	clock := time.Unix(1767268800, 0)
	p := &Probe{Name: "synapse", Config: sc, HTTP: &http.Client{Transport: &http.Transport{}}, Store: NewStore(),
		Now: func() time.Time { clock = clock.Add(time.Second); return clock }}
	defer p.HTTP.CloseIdleConnections()
	const keep = 60
	var (
		ring     []probes.Result
		baseline uint64
	)
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for i := 1; i <= 60; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r := p.Run(ctx, "")
		cancel()
		r.BoundText() // as the engine does
		if i > 1 && r.Outcome == probes.OutcomeFailure {
			t.Fatalf("scrape %d: %s %s: %s", i, r.Outcome, r.Class, r.Error)
		}
		ring = append(ring, r)
		if len(ring) > keep {
			ring = ring[1:]
		}
		if i == 10 {
			baseline = heap()
		}
	}
	kept := 0
	for _, r := range ring {
		for k := range r.Signals {
			kept += len(k)
		}
		kept += len(r.Error)
		for _, s := range r.Steps {
			kept += len(s.Detail) + len(s.Error)
		}
	}
	// 60 results, each with a few hundred signals of at most MaxSignalName
	// bytes: far below one copy of the label.
	if limit := keep * 200 * probes.MaxSignalName; kept > limit {
		t.Errorf("the results keep %d bytes of text, over %d", kept, limit)
	}
	end := heap()
	t.Logf("heap in use after GC: %d KiB at scrape 10, %d KiB at scrape 60; results keep %d KiB of text", baseline>>10, end>>10, kept>>10)
	if float64(end) > 1.1*float64(baseline) {
		t.Errorf("heap in use grew from %d KiB to %d KiB over 50 scrapes", baseline>>10, end>>10)
	}
}
