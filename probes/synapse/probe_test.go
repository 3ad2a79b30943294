package synapse

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
	"github.com/mxprobe/mxprobe/probes"
)

// pageServer serves the pages it is given, one per request, with basic auth.
type pageServer struct {
	mu    sync.Mutex
	pages [][]byte
	ctype string
	n     int
}

func (s *pageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, pw, ok := r.BasicAuth(); !ok || u != "prom" || pw != "s3cret" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	b := s.pages[min(s.n, len(s.pages)-1)]
	s.n++
	ct := s.ctype
	s.mu.Unlock()
	if ct == "" {
		ct = "text/plain; version=0.0.4; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	_, _ = w.Write(b)
}

// fakeClock advances 60 s per call after the first.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(60 * time.Second)
	return t
}

func newProbe(t *testing.T, url string, mutate func(*Settings)) *Probe {
	t.Helper()
	sc := &Settings{URL: url, BasicAuth: &BasicAuth{Username: "prom", Password: "s3cret"}}
	if mutate != nil {
		mutate(sc)
	}
	sc.ApplyDefaults()
	clk := &fakeClock{t: time.Unix(1767268800, 0)}
	return &Probe{Name: "synapse", Config: sc, HTTP: &http.Client{}, Store: NewStore(), Now: clk.now}
}

func runPair(t *testing.T, a, b string) probes.Result {
	t.Helper()
	srv := httptest.NewServer(&pageServer{pages: [][]byte{page(t, a), page(t, b)}})
	defer srv.Close()
	p := newProbe(t, srv.URL+"/_synapse/metrics", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := p.Run(ctx, "")
	if first.Outcome != probes.OutcomeSuccess {
		t.Fatalf("baseline run: %s %s: %s", first.Outcome, first.Class, first.Error)
	}
	if _, ok := first.Signals[SigRequests]; ok {
		t.Errorf("baseline run reports a rate")
	}
	return p.Run(ctx, "")
}

func TestProbeHealthyPasses(t *testing.T) {
	res := runPair(t, "healthy_t0", "healthy_t60")
	if res.Outcome != probes.OutcomeSuccess {
		t.Fatalf("healthy pair: %s %s at %s: %s", res.Outcome, res.Class, res.FailedStep, res.Error)
	}
	e := expected(t, "healthy_t0->healthy_t60")
	within(t, SigP95+":RoomSendEventRestServlet", res.Signals, e.RoomSend.P95, 0.01)
	within(t, SigRequests+":RoomSendEventRestServlet", res.Signals, e.RoomSend.RequestsPerS, 0.01)
	within(t, Sig5xxRatio+":RoomSendEventRestServlet", res.Signals, e.RoomSend.Ratio5xx, 0.01)
	for _, st := range []string{StepResolve, StepScrape, StepParse, StepDerive, StepThresholds} {
		if _, ok := res.StepDuration(st); !ok {
			t.Errorf("step %s missing", st)
		}
	}
}

func TestProbeDegradedFailsNamingBoth(t *testing.T) {
	res := runPair(t, "healthy_t0", "degraded_t60")
	if res.Outcome != probes.OutcomeFailure || res.Class != probes.ClassThreshold || res.FailedStep != StepThresholds {
		t.Fatalf("degraded pair: %s %s at %s: %s", res.Outcome, res.Class, res.FailedStep, res.Error)
	}
	p95 := synapsereplay.HistogramQuantile(0.95, synapsereplay.BucketIncreases(naive(t, "healthy_t0"), naive(t, "degraded_t60"),
		"synapse_http_server_response_time_seconds", synapsereplay.Servlet("RoomSendEventRestServlet", synapsereplay.Code2xx)), false)
	for _, want := range []string{
		"http_5xx_ratio:RoomSendEventRestServlet = 0.08108 above 0.05",
		fmt.Sprintf("http_response_p95_seconds:RoomSendEventRestServlet = %.4g above 2.5", p95),
		"federation_staging_oldest_seconds = 96.3 above warning level 60",
	} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("error %q does not name %q", res.Error, want)
		}
	}
	// The long-poll servlet's latency is not judged by the general threshold
	// (nor the initial syncs: 2 in the window, under min_requests).
	if strings.Contains(res.Error, "http_response_p95_seconds:SyncRestServlet") {
		t.Errorf("long-poll servlet judged on latency: %s", res.Error)
	}
}

func TestProbeRestartedReportsResetWithoutFailing(t *testing.T) {
	res := runPair(t, "healthy_t0", "restarted_t60")
	if !res.OK() {
		t.Fatalf("restarted pair failed: %s %s at %s: %s", res.Outcome, res.Class, res.FailedStep, res.Error)
	}
	if res.Signals[SigCounterResets] <= 0 || res.Signals[SigRestarted] != 1 {
		t.Errorf("reset not reported: counter_resets=%g restarted=%g", res.Signals[SigCounterResets], res.Signals[SigRestarted])
	}
	for k, v := range res.Signals {
		if v < 0 {
			t.Errorf("negative signal %s = %g", k, v)
		}
	}
	if v := res.Signals[SigRequests]; v > 100 {
		t.Errorf("huge rate after a restart: %g", v)
	}
}

func TestProbeBadPages(t *testing.T) {
	good := page(t, "healthy_t0")
	cases := []struct {
		name, ctype string
		body        []byte
		limit       int64
		want        string
	}{
		{"garbage", "", []byte("this is not a metrics page at all\n"), 0, `line 1: metric this: invalid value "is"`},
		{"garbage binary", "", []byte("\x00\x01\x02 junk\n"), 0, "line 1: expected a metric name"},
		{"truncated", "", good[:len(good)/2], 0, "page ends in the middle of a line (truncated?)"},
		{"html text/html", "text/html; charset=utf-8", []byte("<!DOCTYPE html>\n<html><body>Bad gateway</body></html>\n"), 0, "got an HTML page"},
		{"html as text/plain", "", []byte("<!DOCTYPE html>\n<html><body>Bad gateway</body></html>\n"), 0, "line 1: this is not a metrics page, it looks like HTML"},
		{"over limit", "", good, 1 << 16, "over the limit of 65536 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := &pageServer{pages: [][]byte{c.body, good}, ctype: c.ctype}
			srv := httptest.NewServer(ps)
			defer srv.Close()
			p := newProbe(t, srv.URL, func(sc *Settings) { sc.MaxBodyBytes = c.limit })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res := p.Run(ctx, "")
			if res.Outcome != probes.OutcomeFailure || res.Class != probes.ClassBadResponse {
				t.Fatalf("got %s %s: %s", res.Outcome, res.Class, res.Error)
			}
			if !strings.Contains(res.Error, c.want) {
				t.Errorf("error %q does not contain %q", res.Error, c.want)
			}
			// The probe keeps going: the next scrape of a good page passes.
			ps.mu.Lock()
			ps.ctype = ""
			ps.mu.Unlock()
			if c.limit != 0 {
				p.Config.MaxBodyBytes = DefaultMaxBodyBytes
			}
			if res := p.Run(ctx, ""); res.Outcome != probes.OutcomeSuccess {
				t.Errorf("next run: %s %s: %s", res.Outcome, res.Class, res.Error)
			}
		})
	}
}

func TestProbeHTTPErrors(t *testing.T) {
	srv := httptest.NewServer(&pageServer{pages: [][]byte{[]byte("x 1\n")}})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := newProbe(t, srv.URL, func(sc *Settings) { sc.BasicAuth.Password = "wrong" })
	res := p.Run(ctx, "")
	if res.Class != probes.ClassAuthFailed || strings.Contains(res.Error, "wrong") {
		t.Errorf("wrong password: %s %s: %s", res.Outcome, res.Class, res.Error)
	}
	srv.Close()
	res = p.Run(ctx, "")
	if res.Class != probes.ClassUnreachable {
		t.Errorf("closed server: %s %s: %s", res.Outcome, res.Class, res.Error)
	}
}

func TestProbeWindowScrapesTwice(t *testing.T) {
	ps := &pageServer{pages: [][]byte{page(t, "healthy_t0"), page(t, "healthy_t60")}}
	srv := httptest.NewServer(ps)
	defer srv.Close()
	p := newProbe(t, srv.URL, nil)
	p.Window = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := p.Run(ctx, "")
	if res.Outcome != probes.OutcomeSuccess || ps.n != 2 {
		t.Fatalf("%s %s: %s (requests %d)", res.Outcome, res.Class, res.Error, ps.n)
	}
	within(t, SigP95+":RoomSendEventRestServlet", res.Signals, 0.2575, 0.01)
	if _, ok := res.StepDuration(StepBaseline); !ok {
		t.Errorf("no baseline step")
	}
}

func TestEvaluate(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	th := map[string]Threshold{
		"http_5xx_ratio":                       {Warn: f(0.01), Fail: f(0.05)},
		"http_5xx_ratio:KeysQueryServlet":      {Fail: f(0.5)},
		"http_response_p95_seconds":            {Fail: f(2)},
		"events_persisted_per_second":          {WarnBelow: f(0.1), FailBelow: f(0.001)},
		"http_response_p95_seconds:OtherThing": {Warn: f(1)},
	}
	sig := map[string]float64{
		"http_5xx_ratio":                                  0.02,
		"http_5xx_ratio:KeysQueryServlet":                 0.2,
		"http_5xx_ratio:RoomSendEventRestServlet":         0.06,
		"http_response_p95_seconds:SyncRestServlet":       9,
		"http_response_p95_seconds:RoomCreateRestServlet": 3,
		"events_persisted_per_second":                     0.05,
	}
	fails, warns := Evaluate(sig, th, Options{})
	wantF := "http_5xx_ratio:RoomSendEventRestServlet = 0.06 above 0.05|http_response_p95_seconds:RoomCreateRestServlet = 3 above 2"
	wantW := "events_persisted_per_second = 0.05 below warning level 0.1|http_5xx_ratio = 0.02 above warning level 0.01"
	if got := strings.Join(fails, "|"); got != wantF {
		t.Errorf("fails = %s\nwant    %s", got, wantF)
	}
	if got := strings.Join(warns, "|"); got != wantW {
		t.Errorf("warns = %s\nwant    %s", got, wantW)
	}
}
