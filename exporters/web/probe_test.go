package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/probes"
)

// TestProbeAndMetricsOneTranslation: /probe's answer parses as the text
// exposition format (Prometheus' own parser), holds exactly the series of
// its run, and says of that run what /metrics's per-tenant gauges say of
// the same Result (both come from metrics.ResultSeries): success,
// duration, each step's duration, the failure's class and step, the
// delivery time.
func TestProbeAndMetricsOneTranslation(t *testing.T) {
	m := metrics.New()
	engine := probes.NewEngine(2, m)
	t.Cleanup(func() { engine.Shutdown(time.Second) })
	prober := probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
		rec := probes.NewRecorder("rt", "roundtrip", tenant)
		_ = rec.Step("login", func() error { time.Sleep(time.Millisecond); return nil })
		_ = rec.Step("send", func() error { return nil })
		_ = rec.Step("send", func() error { time.Sleep(5 * time.Millisecond); return nil }) // a retry: the first record counts
		_ = rec.Step("receive", func() error {
			if tenant == "bad" {
				return probes.Errorf(probes.ClassTimeout, "no event")
			}
			return nil
		})
		rec.Signal(probes.SignalDeliverySeconds, 0.25)
		rec.Signal("http_5xx_ratio:RoomSendEventRestServlet", 0.5)
		rec.Signal("http_5xx_ratio", 0.125)
		return rec.Finish()
	})
	engine.SetJobs([]*probes.Job{{Name: "rt", Type: "roundtrip", Timeout: 10 * time.Second, Subjects: []string{"good", "bad"}, Prober: prober}})
	srv := New(Options{Registry: m.Registry, Metrics: m.Handler(nil)})
	srv.Enable(Features{Runner: engine, Results: history.New(10)})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)

	get := func(path string) map[string]*dto.MetricFamily {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+path, nil)
		req.Header.Set("Accept", "text/plain")
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("%s does not parse as the text format: %v\n%s", path, err, b)
		}
		return fams
	}
	// series renders a family's series as `{labels} value`, sorted.
	series := func(fams map[string]*dto.MetricFamily, name string, drop ...string) []string {
		var out []string
		for _, mt := range fams[name].GetMetric() {
			var ls []string
		labels:
			for _, l := range mt.GetLabel() {
				for _, d := range drop {
					if l.GetName() == d {
						continue labels
					}
				}
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := mt.GetGauge().GetValue()
			out = append(out, "{"+strings.Join(ls, ",")+"} "+model.SampleValue(v).String())
		}
		sort.Strings(out)
		return out
	}
	for _, tenant := range []string{"good", "bad"} {
		probe := get("/probe?module=rt&tenant=" + tenant)
		var names []string
		for n, f := range probe {
			names = append(names, n)
			if f.GetType() != dto.MetricType_GAUGE {
				t.Errorf("%s: %s is a %v, want a gauge", tenant, n, f.GetType())
			}
		}
		sort.Strings(names)
		want := "probe_duration_seconds probe_http_5xx_ratio probe_message_delivery_seconds probe_step_duration_seconds probe_step_success probe_success probe_warning"
		if tenant == "bad" {
			want = "probe_duration_seconds probe_failure_info probe_http_5xx_ratio probe_message_delivery_seconds probe_step_duration_seconds probe_step_success probe_success probe_warning"
		}
		if got := strings.Join(names, " "); got != want {
			t.Errorf("%s: /probe families\n %s\nwant\n %s", tenant, got, want)
		}
		if got, want := strings.Join(series(probe, "probe_http_5xx_ratio"), " "), "{part=RoomSendEventRestServlet} 0.5 {part=} 0.125"; got != want {
			t.Errorf("%s: signal series %s, want %s", tenant, got, want)
		}
		if got, want := strings.Join(series(probe, "probe_step_success"), " "), map[string]string{
			"good": "{step=login} 1 {step=receive} 1 {step=send} 1", "bad": "{step=login} 1 {step=receive} 0 {step=send} 1"}[tenant]; got != want {
			t.Errorf("%s: step success %s, want %s", tenant, got, want)
		}

		// The same run on /metrics (the engine's sink observed it).
		all := get("/metrics")
		only := func(name string) map[string]*dto.MetricFamily {
			f := &dto.MetricFamily{}
			for _, mt := range all[name].GetMetric() {
				for _, l := range mt.GetLabel() {
					if l.GetName() == "tenant" && l.GetValue() == tenant {
						f.Metric = append(f.Metric, mt)
					}
				}
			}
			return map[string]*dto.MetricFamily{name: f}
		}
		for metricsName, probeName := range map[string]string{
			"mxprobe_probe_success":                    "probe_success",
			"mxprobe_probe_last_duration_seconds":      "probe_duration_seconds",
			"mxprobe_probe_last_step_duration_seconds": "probe_step_duration_seconds",
			"mxprobe_message_delivery_last_seconds":    "probe_message_delivery_seconds",
		} {
			got := series(only(metricsName), metricsName, "probe", "tenant")
			want := series(probe, probeName)
			if strings.Join(got, " ") != strings.Join(want, " ") || len(got) == 0 {
				t.Errorf("%s: /metrics %s %v, /probe %s %v", tenant, metricsName, got, probeName, want)
			}
		}
		failed := series(only("mxprobe_probe_failed_step"), "mxprobe_probe_failed_step", "probe", "tenant")
		info := series(probe, "probe_failure_info")
		if tenant == "bad" && (len(info) != 1 || info[0] != "{class=timeout,step=receive} 1" || strings.Join(failed, "") != info[0]) {
			t.Errorf("failure: /metrics %v, /probe %v", failed, info)
		}
		if tenant == "good" && (len(info) != 0 || len(failed) != 0) {
			t.Errorf("a good run with a failure: /metrics %v, /probe %v", failed, info)
		}
	}
}
