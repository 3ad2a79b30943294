package synapse

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestLiveDendriteMetrics scrapes the local Dendrite's real /metrics page
// (a Go client_golang exposition, basic auth) through the whole probe: the
// live HTTP path, the parser on a page it was not written for, and the
// process signals every Prometheus client exports.
func TestLiveDendriteMetrics(t *testing.T) {
	d := testenv.SharedDendrite(t)
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer httpc.CloseIdleConnections()
	sc := &Settings{URL: d.URL + "/metrics",
		BasicAuth: &BasicAuth{Username: testenv.MetricsUser, Password: testenv.MetricsPassword}}
	sc.ApplyDefaults()
	p := &Probe{Name: "dendrite", Config: sc, HTTP: httpc, Store: NewStore(), Window: 500 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := p.Run(ctx, "")
	if res.Outcome != probes.OutcomeSuccess {
		t.Fatalf("live scrape: %s %s at %s: %s", res.Outcome, res.Class, res.FailedStep, res.Error)
	}
	if res.Signals[SigPageSamples] < 10 || res.Signals[SigRSS] <= 0 || res.Signals[SigWindow] <= 0 {
		t.Errorf("signals from the live page look wrong: %v", res.Signals)
	}
	if _, ok := res.Signals[SigCPU]; !ok {
		t.Errorf("no CPU signal from process_cpu_seconds_total: %v", res.Signals)
	}
	// A second scheduled-style run uses the stored scrape.
	p.Window = 0
	if res := p.Run(ctx, ""); res.Outcome != probes.OutcomeSuccess {
		t.Errorf("second run: %s %s: %s", res.Outcome, res.Class, res.Error)
	}

	// Without the password, the page is refused (Dendrite answers 403).
	bad := *sc
	bad.BasicAuth = nil
	res = (&Probe{Name: "dendrite-noauth", Config: &bad, HTTP: httpc, Store: NewStore()}).Run(ctx, "")
	if res.Class != probes.ClassAuthFailed && res.Class != probes.ClassForbidden {
		t.Errorf("without credentials: %s %s: %s", res.Outcome, res.Class, res.Error)
	}
}
