package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

const testToken = "t0ken-SECRET-value"

// fixture is a web server on a real engine with fake probers.
type fixture struct {
	t       *testing.T
	srv     *Server
	engine  *probes.Engine
	hist    *history.Store
	ts      *httptest.Server
	runs    atomic.Int32
	release chan struct{} // closed to let slow runs finish
	st      Settings
	mu      sync.Mutex
}

func newFixture(t *testing.T, st Settings) *fixture {
	t.Helper()
	f := &fixture{t: t, hist: history.New(10), release: make(chan struct{}), st: st}
	f.engine = probes.NewEngine(4, f.hist)
	slow := probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
		f.runs.Add(1)
		rec := probes.NewRecorder("slow", "login", tenant)
		_ = rec.Step("login", func() error {
			select {
			case <-f.release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		return rec.Finish()
	})
	fast := probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
		f.runs.Add(1)
		rec := probes.NewRecorder("login", "login", tenant)
		_ = rec.Step("login", func() error { time.Sleep(2 * time.Millisecond); return nil })
		_ = rec.Step("whoami", func() error {
			if tenant == "broken" {
				return probes.Errorf(probes.ClassAuthFailed, "M_FORBIDDEN: Invalid username or password <b>")
			}
			return nil
		})
		rec.Signal("http_5xx_ratio:RoomSendEventRestServlet", 0.25)
		rec.Signal("http_5xx_ratio", 0.5)
		rec.Signal("message_delivery_seconds", 0.125)
		rec.Signal("http_5xx_ratio:", 0.75)    // same series as the plain one: dropped
		rec.Signal("step_duration_seconds", 9) // would clash with the step family: dropped
		rec.Signal("9 bad-name", 1)            // sanitized
		return rec.Finish()
	})
	global := probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
		return probes.NewRecorder("versions", "versions", tenant).Finish()
	})
	f.engine.SetJobs([]*probes.Job{
		{Name: "slow", Type: "login", Timeout: 30 * time.Second, Subjects: []string{"acme"}, Prober: slow},
		{Name: "login", Type: "login", Timeout: 30 * time.Second, Subjects: []string{"acme", "broken", "<script>alert(1)</script>"}, Prober: fast},
		{Name: "versions", Type: "versions", Timeout: 30 * time.Second, Subjects: []string{""}, Prober: global},
	})
	f.srv = New(Options{Registry: prometheus.NewRegistry()})
	f.srv.Enable(Features{Runner: f.engine, Results: f.hist, Settings: f.settings})
	f.ts = httptest.NewServer(f.srv.Handler())
	t.Cleanup(func() {
		f.ts.Close()
		select {
		case <-f.release:
		default:
			close(f.release)
		}
		f.engine.Shutdown(time.Second)
	})
	return f
}

func (f *fixture) settings() Settings {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fixture) do(method, path, token string, body io.Reader) (*http.Response, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.ts.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestRunNowNeedsToken is "Done when" 2 (first part).
func TestRunNowNeedsToken(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken})
	resp, body := f.do("POST", "/api/v1/probes/login/run?tenant=acme", "", nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "API token") || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do("POST", "/api/v1/probes/login/run?tenant=acme", "wrong-token", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(body, testToken) {
		t.Fatal("token echoed")
	}
	if n := f.runs.Load(); n != 0 {
		t.Fatalf("%d runs without a valid token", n)
	}
	resp, body = f.do("POST", "/api/v1/probes/login/run?tenant=acme", testToken, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with token: %d %s", resp.StatusCode, body)
	}
	var r probes.Result
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if r.Probe != "login" || r.Tenant != "acme" || r.Outcome != probes.OutcomeSuccess || len(r.Steps) != 2 || r.Steps[0].Duration <= 0 {
		t.Fatalf("result: %+v", r)
	}
	// Behind basic auth the token travels in X-Mxprobe-Token.
	req, _ := http.NewRequest("POST", f.ts.URL+"/api/v1/probes/login/run?tenant=broken", nil)
	req.Header.Set("X-Mxprobe-Token", testToken)
	req.SetBasicAuth("ops", "pw")
	hr, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(hr.Body).Decode(&r)
	hr.Body.Close()
	if hr.StatusCode != 200 || r.Outcome != probes.OutcomeFailure || r.Class != probes.ClassAuthFailed || r.FailedStep != "whoami" {
		t.Fatalf("X-Mxprobe-Token: %d %+v", hr.StatusCode, r)
	}
	// Unknown names are 404 with a clear message.
	for path, want := range map[string]string{
		"/api/v1/probes/nope/run?tenant=acme":  `unknown probe \"nope\"`,
		"/api/v1/probes/login/run?tenant=nope": `unknown tenant \"nope\"`,
	} {
		resp, body = f.do("POST", path, testToken, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	// Reads are open unless protect_reads.
	if resp, body = f.do("GET", "/api/v1/results", "", nil); resp.StatusCode != 200 || !strings.Contains(body, `"tenant": "acme"`) {
		t.Fatalf("open read: %d %s", resp.StatusCode, body)
	}
	f.mu.Lock()
	f.st.ProtectReads = true
	f.mu.Unlock()
	for _, p := range []string{"/api/v1/results", "/api/v1/alerts", "/api/v1/probes", "/probe?module=login&tenant=acme"} {
		if resp, _ = f.do("GET", p, "", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("protected read %s: %d", p, resp.StatusCode)
		}
	}
	var latest []probes.Result
	resp, body = f.do("GET", "/api/v1/results?probe=login&tenant=broken", testToken, nil)
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &latest) != nil || len(latest) != 1 || latest[0].Class != probes.ClassAuthFailed {
		t.Fatalf("filtered results: %d %s", resp.StatusCode, body)
	}
}

// TestRunNowJoinsRunInFlight is "Done when" 2 (second part): two concurrent
// run-now calls for the same probe and tenant cause one run, and both get
// its Result.
func TestRunNowJoinsRunInFlight(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken})
	type answer struct {
		code int
		res  probes.Result
	}
	answers := make(chan answer, 2)
	for range 2 {
		go func() {
			req, _ := http.NewRequest("POST", f.ts.URL+"/api/v1/probes/slow/run?tenant=acme", nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := f.ts.Client().Do(req)
			if err != nil {
				answers <- answer{code: -1}
				return
			}
			defer resp.Body.Close()
			var a answer
			a.code = resp.StatusCode
			_ = json.NewDecoder(resp.Body).Decode(&a.res)
			answers <- a
		}()
	}
	// Wait until the run started and both requests are in the server.
	deadline := time.Now().Add(10 * time.Second)
	for f.runs.Load() < 1 || f.engine.InFlight() != 1 || f.srv.floorJoined("slow", "acme") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the run did not start, or the second request did not join it")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(f.release)
	a, b := <-answers, <-answers
	if a.code != 200 || b.code != 200 {
		t.Fatalf("codes %d %d", a.code, b.code)
	}
	if n := f.runs.Load(); n != 1 {
		t.Fatalf("%d runs for two concurrent run-now calls, want 1", n)
	}
	if !a.res.Started.Equal(b.res.Started) || a.res.Outcome != probes.OutcomeSuccess {
		t.Fatalf("different results: %+v / %+v", a.res, b.res)
	}
}

type fakeAlerts struct {
	mu       sync.Mutex
	silences map[string]Silence
	n        int
}

func (a *fakeAlerts) Alerts() []AlertView {
	return []AlertView{{Rule: "LoginFailing", Tenant: "broken", Probe: "login", State: "firing", Severity: "critical",
		Since: time.Now().Add(-5 * time.Minute), Annotations: map[string]string{"summary": "login <fails> for broken"}, Value: 3}}
}

func (a *fakeAlerts) Silences() []Silence {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Silence
	for _, s := range a.silences {
		out = append(out, s)
	}
	return out
}

func (a *fakeAlerts) AddSilence(s Silence) (Silence, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	s.ID = fmt.Sprintf("s%d", a.n)
	a.silences[s.ID] = s
	return s, nil
}

func (a *fakeAlerts) DeleteSilence(id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.silences[id]; !ok {
		return fmt.Errorf("%w %q", probes.ErrUnknownSilence, id)
	}
	delete(a.silences, id)
	return nil
}

func TestAlertsAndSilences(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken})
	// No alerting configured: empty list, 404 for silences.
	if resp, body := f.do("GET", "/api/v1/alerts", "", nil); resp.StatusCode != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("alerts without alerting: %d %s", resp.StatusCode, body)
	}
	if resp, body := f.do("GET", "/api/v1/silences", "", nil); resp.StatusCode != 404 || !strings.Contains(body, "alerting is not configured") {
		t.Fatalf("silences without alerting: %d %s", resp.StatusCode, body)
	}
	fa := &fakeAlerts{silences: map[string]Silence{}}
	f.srv.SetAlerts(fa)
	var alerts []AlertView
	resp, body := f.do("GET", "/api/v1/alerts", "", nil)
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &alerts) != nil || len(alerts) != 1 || alerts[0].Rule != "LoginFailing" {
		t.Fatalf("alerts: %d %s", resp.StatusCode, body)
	}
	sil := `{"matchers":{"tenant":"broken"},"ends_at":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `","comment":"maintenance"}`
	if resp, _ := f.do("POST", "/api/v1/silences", "", strings.NewReader(sil)); resp.StatusCode != 401 {
		t.Fatalf("silence without token: %d", resp.StatusCode)
	}
	resp, body = f.do("POST", "/api/v1/silences", testToken, strings.NewReader(sil))
	var got Silence
	if resp.StatusCode != 201 || json.Unmarshal([]byte(body), &got) != nil || got.ID == "" || got.CreatedBy != "api" || got.StartsAt.IsZero() {
		t.Fatalf("add silence: %d %s", resp.StatusCode, body)
	}
	for _, bad := range []string{`{"matchers":{}}`, `{"matchers":{"a":"b"},"ends_at":"2000-01-01T00:00:00Z"}`, `{"nope":1}`, `not json`} {
		if resp, body := f.do("POST", "/api/v1/silences", testToken, strings.NewReader(bad)); resp.StatusCode != 400 || !strings.Contains(body, "bad silence") {
			t.Errorf("bad silence %s: %d %s", bad, resp.StatusCode, body)
		}
	}
	if resp, _ := f.do("DELETE", "/api/v1/silences/"+got.ID, "", nil); resp.StatusCode != 401 {
		t.Fatalf("delete without token: %d", resp.StatusCode)
	}
	if resp, body := f.do("DELETE", "/api/v1/silences/"+got.ID, testToken, nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	if resp, body := f.do("DELETE", "/api/v1/silences?id="+url.QueryEscape(got.ID), testToken, nil); resp.StatusCode != 404 {
		t.Fatalf("delete again: %d %s", resp.StatusCode, body)
	}
}

func TestProbeEndpoint(t *testing.T) {
	f := newFixture(t, Settings{})
	resp, body := f.do("GET", "/probe?module=login&tenant=acme", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	for _, want := range []string{"probe_success 1", "probe_duration_seconds ", `probe_step_duration_seconds{step="login"}`,
		`probe_step_duration_seconds{step="whoami"}`, `probe_http_5xx_ratio{part="RoomSendEventRestServlet"} 0.25`,
		`probe_http_5xx_ratio{part=""} 0.5`, "probe_message_delivery_seconds 0.125", "probe___bad_name 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in:\n%s", want, body)
		}
	}
	if strings.Contains(body, "0.75") || strings.Contains(body, " 9\n") {
		t.Errorf("duplicate or clashing signal exposed:\n%s", body)
	}
	if strings.Contains(body, "go_goroutines") || strings.Contains(body, "mxprobe_") {
		t.Errorf("/probe must expose this run only:\n%s", body)
	}
	_, body = f.do("GET", "/probe?module=login&tenant=broken", "", nil)
	if !strings.Contains(body, "probe_success 0") || !strings.Contains(body, `probe_failure_info{class="auth_failed",step="whoami"} 1`) {
		t.Errorf("failed run:\n%s", body)
	}
	if _, body = f.do("GET", "/probe?module=versions", "", nil); !strings.Contains(body, "probe_success 1") {
		t.Errorf("global probe:\n%s", body)
	}
	for q, want := range map[string]string{
		"module=nope&tenant=acme":  `unknown module "nope": the module parameter names a configured probe (configured: login, slow, versions)`,
		"module=login&tenant=nope": `unknown tenant "nope" for module "login"`,
		"module=login":             `module "login" runs per tenant: add &tenant=<tenant id>`,
		"tenant=acme":              "module parameter is missing",
	} {
		resp, body := f.do("GET", "/probe?"+q, "", nil)
		if resp.StatusCode != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s", q, resp.StatusCode, body)
		}
	}
}

// TestProbeScrapeTimeout: a run longer than Prometheus' scrape timeout
// answers probe_success 0 in time instead of hanging the scrape.
func TestProbeScrapeTimeout(t *testing.T) {
	f := newFixture(t, Settings{})
	req, _ := http.NewRequest("GET", f.ts.URL+"/probe?module=slow&tenant=acme", nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "0.7")
	t0 := time.Now()
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if el := time.Since(t0); el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	if !strings.Contains(string(b), "probe_success 0") || !strings.Contains(string(b), `probe_failure_info{class="timeout",step=""} 1`) {
		t.Fatalf("%s", b)
	}
}
