package web

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

// BenchmarkStatusPage renders the page for 500 tenants × 2 probes with 30
// runs of history each.
func BenchmarkStatusPage(b *testing.B) {
	const tenants = 500
	hist := history.New(30)
	var subjects []string
	names := map[string]string{}
	for i := range tenants {
		id := fmt.Sprintf("tenant-%04d", i)
		subjects = append(subjects, id)
		names[id] = "Tenant " + id
	}
	start := time.Now().Add(-time.Hour)
	for _, p := range []string{"login", "roundtrip"} {
		for _, s := range subjects {
			for r := range 30 {
				res := probes.Result{Probe: p, Type: p, Tenant: s, Outcome: probes.OutcomeSuccess, Started: start.Add(time.Duration(r) * time.Minute),
					Duration: time.Duration(20+r%7) * time.Millisecond, Steps: []probes.Step{{Name: "login", OK: true, Duration: 15 * time.Millisecond}, {Name: "whoami", OK: true, Duration: 3 * time.Millisecond}}}
				if r%11 == 0 {
					res.Outcome, res.Class, res.FailedStep, res.Error = probes.OutcomeFailure, probes.ClassTimeout, "login", "context deadline exceeded"
				}
				hist.Observe(res)
			}
		}
	}
	engine := probes.NewEngine(1)
	defer engine.Shutdown(0)
	noop := probes.ProberFunc(func(context.Context, string) probes.Result { return probes.Result{} })
	engine.SetJobs([]*probes.Job{
		{Name: "login", Type: "login", Timeout: time.Second, Subjects: subjects, Prober: noop},
		{Name: "roundtrip", Type: "roundtrip", Timeout: time.Second, Subjects: subjects, Prober: noop},
	})
	srv := New(Options{Registry: prometheus.NewRegistry()})
	srv.Enable(Features{Runner: engine, Results: hist, Settings: func() Settings {
		return Settings{TenantNames: names, SparklineRuns: 30}
	}})
	h := srv.Handler()
	b.ReportAllocs()
	var size int
	for b.Loop() {
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, httptest.NewRequest("GET", "/", nil))
		if rr.Code != 200 {
			b.Fatal(rr.Code)
		}
		size = rr.Body.Len()
	}
	b.ReportMetric(float64(size)/1024, "KiB/page")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/(2*tenants), "µs/row")
}
