package synapse

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
	"github.com/mxprobe/mxprobe/probes"
)

// TestSynapseNewSignalsInMetrics is "Done when" 4: on the reference pages
// (healthy_t0, then degraded_t60 60 s later), every signal added for
// Synapse's dashboard rows is in /metrics with the value the independent
// reader computes.
func TestSynapseNewSignalsInMetrics(t *testing.T) {
	var pages [][]byte
	for _, n := range []string{"healthy_t0", "degraded_t60"} {
		b, err := synapsereplay.Page(n)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, b)
	}
	var mu sync.Mutex
	served := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		b := pages[min(served, 1)]
		served++
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	sc := &Settings{URL: srv.URL}
	sc.ApplyDefaults()
	now := time.Unix(1767268800, 0)
	p := &Probe{Name: "synapse", Config: sc, HTTP: srv.Client(), Now: func() time.Time { return now }}
	reg := prometheus.NewRegistry()
	observe, err := Type().Metrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	observe(p.Run(ctx, ""))
	now = now.Add(60 * time.Second)
	r := p.Run(ctx, "")
	if r.Outcome == probes.OutcomeSkipped || r.Signals["processes_up"] != 1 {
		t.Fatalf("%s: %s", r.Outcome, r.Error)
	}
	observe(r)

	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				if l.GetName() != "probe" {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
			}
			got[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = s.GetGauge().GetValue()
		}
	}
	p0, err := synapsereplay.ParseNaive(pages[0])
	if err != nil {
		t.Fatal(err)
	}
	p1, err := synapsereplay.ParseNaive(pages[1])
	if err != nil {
		t.Fatal(err)
	}
	want, err := synapsereplay.ExpectNewSignals(p0, p1, 60, DefaultTopCaches)
	if err != nil {
		t.Fatal(err)
	}
	for sig, v := range want {
		base, part, _ := strings.Cut(sig, ":")
		var series string
		switch base {
		case "event_processing_lag_events":
			series = "mxprobe_synapse_event_processing_lag_events{loop=" + orAll(part) + "}"
		case "cache_hit_ratio":
			series = "mxprobe_synapse_cache_hit_ratio{cache=" + orAll(part) + "}"
		case "http_429_per_second":
			series = "mxprobe_synapse_http_429_per_second{}"
		default:
			series = "mxprobe_synapse_" + base + "{}"
		}
		g, ok := got[series]
		switch {
		case !ok:
			t.Errorf("%s (signal %s) not in /metrics", series, sig)
		case v == 0 && g != 0, v != 0 && math.Abs(g-v)/math.Abs(v) > 1e-9:
			t.Errorf("%s = %.12g, want %.12g", series, g, v)
		}
	}
	if v := got["mxprobe_synapse_federation_staging_oldest_seconds{}"]; v != 96.3 {
		t.Errorf("staging age %g s, want 96.3", v)
	}
	if v := got["mxprobe_synapse_process_up{kind=main,worker=main}"]; v != 1 {
		t.Errorf("process_up of main: %g (have %d series)", v, len(got))
	}
}

func orAll(part string) string {
	if part == "" {
		return "all"
	}
	return part
}
