package metrics

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mxprobe/mxprobe/probes"
)

func scrape(t *testing.T, m *Metrics, accept, encoding string) (http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	rec := httptest.NewRecorder()
	m.Handler(nil).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.Bytes()
	if rec.Header().Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return rec.Header(), string(body)
}

// TestHandlerTextParses: the text answer is one well-formed page (the
// parser refuses a family split in two or a malformed line) holding the
// registry's families and the per-tenant ones, the same with and without
// gzip, and what Gather reports.
func TestHandlerTextParses(t *testing.T) {
	m := New()
	observeMix(m)
	h, body := scrape(t, m, "text/plain;version=0.0.4", "")
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	fams, err := parsePage(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the page does not parse: %v\n%s", err, body)
	}
	for _, name := range []string{"mxprobe_probe_success", "mxprobe_probe_runs_total", "mxprobe_rate_limited_total",
		"mxprobe_token_refresh_total", "mxprobe_probe_duration_seconds", "go_goroutines", "mxprobe_build_info"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
	if n := len(fams["mxprobe_probe_runs_total"].GetMetric()); n != 7 {
		t.Errorf("%d runs_total series, want 7 (six tenants and probes, one with two results)", n)
	}
	gathered, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gathered {
		if !strings.HasPrefix(g.GetName(), "mxprobe_") || g.GetName() == "mxprobe_build_info" {
			continue
		}
		if p := fams[g.GetName()]; p == nil || len(p.GetMetric()) != len(g.GetMetric()) {
			t.Errorf("%s: Gather has %d series, the page %d", g.GetName(), len(g.GetMetric()), len(p.GetMetric()))
		}
	}
	_, zipped := scrape(t, m, "text/plain;version=0.0.4", "gzip, deflate")
	if strip(zipped) != strip(body) {
		t.Error("the gzipped page differs from the plain one")
	}
	if _, off := scrape(t, m, "", "gzip;q=0"); strip(off) != strip(body) {
		t.Error("gzip;q=0 was not honoured")
	}
	// A scraper that asks only for protobuf gets text (no native histograms here).
	if h, _ := scrape(t, m, "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", ""); !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Errorf("protobuf request answered as %q", h.Get("Content-Type"))
	}
}

// strip drops the Go and process series, which change between two scrapes.
func strip(page string) string {
	var out []string
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, "mxprobe_") || strings.HasPrefix(l, "# HELP mxprobe_") || strings.HasPrefix(l, "# TYPE mxprobe_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHandlerOpenMetrics: asked for OpenMetrics (Prometheus 3's first
// choice), the page names counter families without _total, writes whole
// numbers with ".0" as expfmt does, and ends with "# EOF".
func TestHandlerOpenMetrics(t *testing.T) {
	m := New()
	observeMix(m)
	h, body := scrape(t, m, "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", "")
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text; version=1.0.0") {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, want := range []string{
		"# TYPE mxprobe_probe_runs counter\n",
		`mxprobe_probe_runs_total{probe="login",result="success",tenant="t1"} 1.0` + "\n",
		"# TYPE mxprobe_probe_success gauge\n",
		`mxprobe_probe_success{probe="login",tenant="t10"} 0.0` + "\n",
		`mxprobe_message_delivery_last_seconds{probe="roundtrip",tenant="t2"} 0.4` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	if !strings.HasSuffix(body, "# EOF\n") {
		t.Error(`the page does not end with "# EOF"`)
	}
	if strings.Count(body, "# TYPE mxprobe_probe_runs ") != 1 {
		t.Error("mxprobe_probe_runs is described more than once")
	}
}

// TestHandlerEscapesLabels: label values with a quote, a backslash or a
// line feed come back unchanged through the parser.
func TestHandlerEscapesLabels(t *testing.T) {
	m := New()
	odd := "a\"b\\c\nd"
	m.Observe(probes.Result{Probe: "login", Tenant: odd, Outcome: probes.OutcomeFailure, Class: probes.ClassHTTP5xx,
		FailedStep: "x\"y", Started: time.Unix(1_700_000_000, 0), Duration: time.Second,
		Steps: []probes.Step{{Name: "x\"y", Duration: time.Second}}, Counts: map[string]int{probes.CountRateLimited + `:s\t`: 1}})
	_, body := scrape(t, m, "", "")
	fams, err := parsePage(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	for _, name := range []string{"mxprobe_probe_success", "mxprobe_probe_failed_step", "mxprobe_probe_last_step_duration_seconds", "mxprobe_rate_limited_total"} {
		ms := fams[name].GetMetric()
		if len(ms) != 1 {
			t.Fatalf("%s: %d series", name, len(ms))
		}
		for _, l := range ms[0].GetLabel() {
			switch l.GetName() {
			case "tenant":
				if l.GetValue() != odd {
					t.Errorf("%s: tenant %q, want %q", name, l.GetValue(), odd)
				}
			case "step":
				if want := map[bool]string{true: `s\t`, false: "x\"y"}[name == "mxprobe_rate_limited_total"]; l.GetValue() != want {
					t.Errorf("%s: step %q, want %q", name, l.GetValue(), want)
				}
			}
		}
	}
}

// TestScrapeDuringRuns: scrapes and runs at once (run with -race): every
// page parses, and the runs are all counted at the end.
func TestScrapeDuringRuns(t *testing.T) {
	m := New()
	var wg sync.WaitGroup
	const tenants, runs = 50, 20
	for i := range tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range runs {
				m.Observe(probes.Result{Probe: "p", Tenant: string(rune('A' + i)), Outcome: probes.OutcomeSuccess,
					Started: time.Now(), Duration: time.Millisecond, Steps: []probes.Step{{Name: "s", OK: true}},
					Counts: map[string]int{probes.CountRateLimited + ":s": 1}})
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20 {
			_, body := scrape(t, m, "", "")
			if _, err := parsePage(strings.NewReader(body)); err != nil {
				t.Errorf("page during runs: %v", err)
				return
			}
		}
	}()
	wg.Wait()
	<-done
	_, body := scrape(t, m, "", "")
	fams, err := parsePage(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, s := range fams["mxprobe_probe_runs_total"].GetMetric() {
		total += s.GetCounter().GetValue()
	}
	limited := 0.0
	for _, s := range fams["mxprobe_rate_limited_total"].GetMetric() {
		limited += s.GetCounter().GetValue()
	}
	if total != tenants*runs || limited != tenants*runs {
		t.Fatalf("runs %v, 429s %v, want %d each", total, limited, tenants*runs)
	}
}

func parsePage(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}
