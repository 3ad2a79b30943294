package synapse

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TestRunsReportDeclaredSteps: what runs of the type's prober report (a
// `mxprobe run` with its baseline scrape over the reference pages, an
// unreachable page, an HTML page, a DNS name that does not resolve) is
// what the type declares, and together they use every declared step.
func TestRunsReportDeclaredSteps(t *testing.T) {
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
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/html" {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html></html>"))
			return
		}
		mu.Lock()
		b := pages[min(served, 1)]
		served++
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	typ := Type()
	build := func(settings string, window time.Duration) *Probe {
		t.Helper()
		cfg, err := parse(fmt.Sprintf("probes:\n  - {name: synapse, type: synapse_metrics, synapse: %s}\n", settings))
		if err != nil {
			t.Fatal(err)
		}
		p := &cfg.Probes[0]
		if window > 0 {
			if err := typ.PrepareRun(cfg, p, probetype.RunOptions{Window: window}); err != nil {
				t.Fatal(err)
			}
		}
		in := probetype.Inputs{Name: p.Name, Probe: p, HTTP: srv.Client(), Deps: &probetype.Deps{}}
		probetype.Provide(in.Deps, NewStore())
		pr, err := typ.New(in)
		if err != nil {
			t.Fatal(err)
		}
		return pr.(*Probe)
	}
	replay := build(fmt.Sprintf("{url: %q}", srv.URL+"/_synapse/metrics"), 50*time.Millisecond)
	start := time.Unix(1767268800, 0)
	replay.Now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return start.Add(time.Duration(served) * 60 * time.Second)
	}
	dns := build("{dns: {name: synapse-workers.matrix.svc, port: 9101}}", 0)
	dns.LookupHost = func(context.Context, string) ([]string, error) { return nil, errors.New("no such host") }
	runs := []struct {
		name   string
		p      *Probe
		failed string
	}{
		{"mxprobe run over the reference pages (degraded)", replay, StepThresholds},
		{"unreachable", build(fmt.Sprintf("{url: %q}", closed.URL+"/_synapse/metrics"), 0), StepScrape},
		{"html page", build(fmt.Sprintf("{url: %q}", srv.URL+"/html"), 0), StepScrape},
		{"dns", dns, StepResolve},
	}
	var used []string
	for _, c := range runs {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r := c.p.Run(ctx, "")
		cancel()
		if r.FailedStep != c.failed {
			t.Errorf("%s: failed at %q (%s %s), want %q", c.name, r.FailedStep, r.Class, r.Error, c.failed)
		}
		if err := probetype.CheckResult(typ, r); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if r.Type != typ.Name {
			t.Errorf("%s: result of type %q", c.name, r.Type)
		}
		for _, s := range r.Steps {
			used = append(used, s.Name)
		}
	}
	for _, s := range typ.Steps {
		if !slices.Contains(used, s) {
			t.Errorf("declared step %q never reported by these runs", s)
		}
	}
}
