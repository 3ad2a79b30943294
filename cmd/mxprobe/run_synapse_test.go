package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// TestRunSynapseStagingAge is "Done when" 1: `mxprobe run synapse_metrics
// --target URL --window 60s --output json` over the corrected reference
// pages (healthy_t0, then degraded_t60, whose staging gauge holds 96300 ms)
// reports the staging age as 96.3 s.
func TestRunSynapseStagingAge(t *testing.T) {
	t.Parallel() // waits out the 60 s window
	var pages [][]byte
	for _, n := range []string{"healthy_t0", "degraded_t60"} {
		b, err := synapsereplay.Page(n)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, b)
	}
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		b := pages[min(n, 1)]
		n++
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	code := run([]string{"run", "synapse_metrics", "--target", srv.URL + "/_synapse/metrics", "--window", "60s", "--output", "json"}, &out, &errb)
	var res struct {
		Outcome string             `json:"outcome"`
		Error   string             `json:"error"`
		Signals map[string]float64 `json:"signals"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("exit %d, output %q (%v), stderr %s", code, out.String(), err, errb.String())
	}
	if v, ok := res.Signals["federation_staging_oldest_seconds"]; !ok || v != 96.3 {
		t.Errorf("staging age %v (present %v), want 96.3 s; outcome %s: %s", v, ok, res.Outcome, res.Error)
	}
	if w := res.Signals["window_seconds"]; w < 59 || w > 120 {
		t.Errorf("window %g s, want about 60", w)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 2 {
		t.Errorf("%d scrapes, want 2", n)
	}
}
