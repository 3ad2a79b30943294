package metrics_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/probes"
)

// benchProbes are four per-tenant probes with the steps the real ones record.
var benchProbes = []struct {
	name, typ string
	steps     []string
}{
	{"login", "login", []string{"discovery", "register_client", "authorize", "upstream_login", "consent", "token_exchange", "whoami"}},
	{"roundtrip", "room_roundtrip", []string{"login", "create_room", "invite", "join", "send", "receive", "power_level", "leave", "forget"}},
	{"message", "room_message", []string{"login", "join", "send", "receive"}},
	{"versions", "versions", []string{"versions"}},
}

// fill feeds m one result per probe and tenant; every 25th run fails, a few
// are rate limited, the round trips carry a delivery time.
func fill(m *metrics.Metrics, tenants int) {
	now := time.Now()
	for i := range tenants {
		tenant := fmt.Sprintf("tenant-%04d", i)
		for pi, p := range benchProbes {
			r := probes.Result{Probe: p.name, Type: p.typ, Tenant: tenant, Outcome: probes.OutcomeSuccess,
				Started: now, Duration: 800 * time.Millisecond, Method: "mas_oidc"}
			failAt := -1
			if (i+pi)%25 == 0 {
				failAt = len(p.steps) / 2
			}
			for si, s := range p.steps {
				st := probes.Step{Name: s, Duration: time.Duration(20+si*7) * time.Millisecond, OK: true}
				if si == failAt {
					st.OK, st.Class, st.Error = false, probes.ClassHTTP5xx, "HTTP 502"
					r.Outcome, r.Class, r.FailedStep, r.Error = probes.OutcomeFailure, probes.ClassHTTP5xx, s, "HTTP 502"
				}
				r.Steps = append(r.Steps, st)
				if si == failAt {
					break
				}
			}
			r.SetSignal(probes.LatenessKey, 0.002)
			if p.typ == "room_roundtrip" {
				r.SetSignal(probes.SignalDeliverySeconds, 0.12)
			}
			if i%50 == 0 {
				r.AddCount(probes.CountRateLimited, 1)
			}
			r.AddCount("login:mas_oidc:success", 1)
			m.Observe(r)
		}
	}
}

// BenchmarkMetricsScrape1000x4 times one /metrics scrape (Handler, in the
// formats Prometheus asks for) with 1,000 tenants ×
// 4 probes of results in the sink. Target: < 50 ms per scrape.
func BenchmarkMetricsScrape1000x4(b *testing.B) {
	for _, enc := range []struct{ name, accept, encoding string }{
		{"text", "text/plain;version=0.0.4", ""},
		// What Prometheus asks for by default: the text format, gzipped.
		{"text+gzip", "text/plain;version=0.0.4", "gzip"},
		// What Prometheus 3 asks for first.
		{"openmetrics", "application/openmetrics-text;version=1.0.0", ""},
	} {
		b.Run("format="+enc.name, func(b *testing.B) {
			m := metrics.New()
			fill(m, 1000)
			h := m.Handler(nil)
			req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
			req.Header.Set("Accept", enc.accept)
			if enc.encoding != "" {
				req.Header.Set("Accept-Encoding", enc.encoding)
			}
			var bytes, series int
			if enc.name == "text" {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				for _, l := range strings.Split(rec.Body.String(), "\n") {
					if l != "" && l[0] != '#' {
						series++
					}
				}
			}
			b.ResetTimer()
			for range b.N {
				// The answer streams to a connection in real life: count it
				// instead of growing a buffer (which would dominate the
				// benchmark's allocations).
				w := &countingWriter{header: http.Header{}}
				h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("HTTP %d", w.code)
				}
				bytes = w.n
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/scrape")
			b.ReportMetric(float64(bytes), "bytes/scrape")
			if series > 0 {
				b.ReportMetric(float64(series), "series")
			}
		})
	}
}

// TestScrapeShowsEveryTenant keeps the benchmark honest: the scrape it times
// carries the per-tenant series of all 1,000 tenants × 4 probes.
func TestScrapeShowsEveryTenant(t *testing.T) {
	m := metrics.New()
	fill(m, 1000)
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	n := strings.Count(body, "\nmxprobe_probe_success{")
	if n != 4000 {
		t.Fatalf("mxprobe_probe_success series: %d, want 4000", n)
	}
	if !strings.Contains(body, `mxprobe_probe_failed_step{class="http_5xx",probe="login",step="upstream_login",tenant="tenant-0000"} 1`) {
		t.Fatal("failed step series missing")
	}
}

type countingWriter struct {
	header http.Header
	code   int
	n      int
}

func (w *countingWriter) Header() http.Header { return w.header }
func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *countingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
