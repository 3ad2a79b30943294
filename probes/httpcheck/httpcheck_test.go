package httpcheck_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/faultproxy"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/httpcheck"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// section parses an http probe section the way the daemon does (defaults,
// validation, the regex compiled).
func section(t *testing.T, url, extra string) *httpcheck.Settings {
	t.Helper()
	y := fmt.Sprintf("probes:\n  - name: h\n    type: http\n    http:\n      url: %q\n", url)
	for _, l := range strings.Split(strings.TrimSpace(extra), "\n") {
		if l != "" {
			y += "      " + l + "\n"
		}
	}
	cfg, err := config.Parse([]byte(y), "h.yml", func(string) string { return "" }, httpcheck.Type().Kind)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	p, _ := cfg.Probe("h")
	s, err := httpcheck.DecodeSettings(cfg, p, p.SettingsNode("http"))
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	return s
}

func run(t *testing.T, c *httpcheck.Settings, timeout time.Duration) probes.Result {
	t.Helper()
	httpc := mxclient.NewHTTPClient()
	defer httpc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return (&httpcheck.Probe{Name: "h", Config: c, HTTP: httpc}).Run(ctx, "")
}

func steps(r probes.Result) string {
	var s []string
	for _, st := range r.Steps {
		s = append(s, st.Name)
	}
	return strings.Join(s, ",")
}

// OpenMeet's health answers (health.controller.ts): terminus's report when
// healthy, a 503 report when a check fails, and 200 {"status":"error"} when
// the check throws (the controller catches it).
const (
	healthy   = `{"status":"ok","info":{"database":{"status":"up"},"matrix":{"status":"up"}},"error":{},"details":{"database":{"status":"up"},"matrix":{"status":"up"}}}`
	unhealthy = `{"status":"error","info":{"database":{"status":"up"}},"error":{"matrix":{"status":"down"}},"details":{"database":{"status":"up"},"matrix":{"status":"down"}}}`
	caught    = `{"status":"error","database":"disconnected","error":"connect ECONNREFUSED"}`
)

func TestHTTPProbeAnswers(t *testing.T) {
	mux := http.NewServeMux()
	answer := func(path string, status int, body string) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		})
	}
	answer("/health/readiness", 200, healthy)
	answer("/unhealthy", 503, unhealthy)
	answer("/caught", 200, caught)
	answer("/text", 200, "<html>hello world</html>")
	answer("/list", 200, `{"items":[{"id":7,"ok":true,"none":null}]}`)
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/health/readiness", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	statusJSON := "json:\n  - {path: status, equals: ok}"

	for _, c := range []struct {
		name, path, extra string
		class             probes.Class
		step, steps, msg  string
		status            int
	}{
		{"healthy", "/health/readiness", statusJSON + "\n  - {path: info.matrix.status, equals: up}", "", "", "request,status,body", "", 0},
		{"no checks", "/health/readiness", "", "", "", "request,status", "", 0},
		{"503 report", "/unhealthy", statusJSON, probes.ClassHTTP5xx, "status", "request,status", "HTTP 503, expected 2xx", 503},
		{"200 with status error", "/caught", statusJSON, probes.ClassBadResponse, "body", "request,status,body", `JSON field status is "error", expected "ok"`, 0},
		{"field missing", "/health/readiness", "json:\n  - {path: info.redis.status, equals: up}", probes.ClassBadResponse, "body", "request,status,body", "JSON field info.redis.status is missing", 0},
		{"not JSON", "/text", statusJSON, probes.ClassBadResponse, "body", "request,status,body", "body is not JSON", 0},
		{"array index, number, bool, null", "/list", "json:\n  - {path: items.0.id, equals: \"7\"}\n  - {path: items.0.ok, equals: \"true\"}\n  - {path: items.0.none, equals: \"null\"}", "", "", "request,status,body", "", 0},
		{"regex matches", "/text", `body_regex: "hello w.rld"`, "", "", "request,status,body", "", 0},
		{"regex does not match", "/text", `body_regex: "^goodbye"`, probes.ClassBadResponse, "body", "request,status,body", "does not match ^goodbye", 0},
		{"unexpected 2xx", "/health/readiness", "expected_status: [204]", probes.ClassBadResponse, "status", "request,status", "HTTP 200, expected 204", 200},
		{"listed 503 accepted", "/unhealthy", "expected_status: [200, 503]", "", "", "request,status", "", 0},
		{"404", "/nowhere", "", probes.ClassNotFound, "status", "request,status", "HTTP 404", 404},
		{"redirect not followed", "/moved", statusJSON, probes.ClassBadResponse, "status", "request,status", "HTTP 302, expected 2xx", 302},
		{"redirect followed", "/moved", statusJSON + "\nfollow_redirects: true", "", "", "request,status,body", "", 0},
		{"redirect loop", "/loop", "follow_redirects: true", probes.ClassBadResponse, "request", "request", "stopped after 10 redirects", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, section(t, srv.URL+c.path, c.extra), 10*time.Second)
			if r.Class != c.class || r.FailedStep != c.step || steps(r) != c.steps || !strings.Contains(r.Error, c.msg) {
				t.Fatalf("class %q step %q steps %s error %q; want %q %q %s %q", r.Class, r.FailedStep, steps(r), r.Error, c.class, c.step, c.steps, c.msg)
			}
			if c.status != 0 && r.Steps[len(r.Steps)-1].Status != c.status {
				t.Errorf("status of the failed step %d, want %d", r.Steps[len(r.Steps)-1].Status, c.status)
			}
			if c.class == "" && (r.Outcome != probes.OutcomeSuccess || r.Signals[httpcheck.SignalStatus] < 200) {
				t.Errorf("outcome %s, signals %v", r.Outcome, r.Signals)
			}
		})
	}
}

// The request carries the configured method, headers, body and bearer
// token; the token never shows in the result.
func TestHTTPProbeRequest(t *testing.T) {
	type seen struct{ method, tenant, auth, body, ua, host string }
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.Header.Get("x-tenant-id"), r.Header.Get("Authorization"), string(b), r.Header.Get("User-Agent"), r.Host}
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"message":"token Bearer tok-SECRET-1234 refused"}`)
	}))
	defer srv.Close()
	c := section(t, srv.URL+"/api/health/matrix", `method: post
headers: {x-tenant-id: acme, Content-Type: application/json, host: api.openmeet.example}
body: '{"ping":1}'
bearer_token: tok-SECRET-1234`)
	r := run(t, c, 10*time.Second)
	s := <-got
	if s.method != "POST" || s.tenant != "acme" || s.auth != "Bearer tok-SECRET-1234" || s.body != `{"ping":1}` || !strings.HasPrefix(s.ua, "mxprobe") ||
		s.host != "api.openmeet.example" {
		t.Fatalf("request %+v", s)
	}
	if r.Class != probes.ClassAuthFailed || r.FailedStep != "status" {
		t.Fatalf("class %s step %s", r.Class, r.FailedStep)
	}
	if b, _ := json.Marshal(r); strings.Contains(string(b), "SECRET") {
		t.Fatalf("token in result: %s", b)
	}
}

// A body is read up to max_body_bytes only; a longer one fails the body
// checks instead of being read whole, and passes when nothing checks it.
func TestHTTPProbeBoundedBody(t *testing.T) {
	sent := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		var n int64
		for i := 0; i < 512; i++ { // 32 MiB, if anyone reads it all
			k, err := w.Write(chunk)
			n += int64(k)
			if err != nil {
				break
			}
		}
		sent <- n
	}))
	defer srv.Close()
	r := run(t, section(t, srv.URL, "max_body_bytes: 1024\nbody_regex: x+"), 10*time.Second)
	if r.Class != probes.ClassBadResponse || r.FailedStep != "body" || !strings.Contains(r.Error, "longer than 1024 bytes") {
		t.Fatalf("class %s step %s: %s", r.Class, r.FailedStep, r.Error)
	}
	if n := <-sent; n >= 32<<20 {
		t.Errorf("the whole body (%d bytes) was read", n)
	}
	r = run(t, section(t, srv.URL, "max_body_bytes: 1024"), 10*time.Second)
	<-sent
	if !r.OK() {
		t.Fatalf("no checks, long body: %s %s", r.Class, r.Error)
	}
}

// Transport faults, injected by a proxy in front of a healthy endpoint.
func TestHTTPProbeFaults(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, healthy+strings.Repeat(" ", 32<<10))
	}))
	defer srv.Close()
	px, err := faultproxy.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	check := "json:\n  - {path: status, equals: ok}"
	for _, c := range []struct {
		name  string
		fault faultproxy.Fault
		class probes.Class
	}{
		{"hang", faultproxy.Fault{Hang: true}, probes.ClassTimeout},
		{"reset", faultproxy.Fault{Reset: true}, probes.ClassBadResponse},
		{"cut body", faultproxy.Fault{CutBody: true}, probes.ClassBadResponse},
		{"slow body", faultproxy.Fault{SlowBody: 5 * time.Second}, probes.ClassTimeout},
		{"502", faultproxy.Fault{Status: 502}, probes.ClassHTTP5xx},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := px.Add(faultproxy.Rule{Fault: c.fault})
			defer h.Remove()
			r := run(t, section(t, px.URL+"/health/readiness?k=QUERY-SECRET", check), 700*time.Millisecond)
			if r.Class != c.class || r.OK() {
				t.Fatalf("class %q at %s, want %q: %s", r.Class, r.FailedStep, c.class, r.Error)
			}
			if strings.Contains(r.Error, "QUERY-SECRET") {
				t.Errorf("URL echoed: %s", r.Error)
			}
		})
	}
	// Nothing listening.
	closed := httptest.NewServer(http.NotFoundHandler())
	url := closed.URL
	closed.Close()
	r := run(t, section(t, url+"/health/readiness?k=QUERY-SECRET", check), 5*time.Second)
	if r.Class != probes.ClassUnreachable || r.FailedStep != "request" || strings.Contains(r.Error, "QUERY-SECRET") {
		t.Fatalf("refused: class %s step %s: %s", r.Class, r.FailedStep, r.Error)
	}
	// With the fault gone, the same probe passes.
	if r := run(t, section(t, px.URL+"/health/readiness", check), 5*time.Second); !r.OK() {
		t.Fatalf("healthy through the proxy: %s %s", r.Class, r.Error)
	}
}

// TestHTTPConfigErrors: the type decodes and checks its own settings, and
// each problem names the file, the line and the field.
func TestHTTPConfigErrors(t *testing.T) {
	y := `probes:
  - name: a
    type: http
  - name: b
    type: http
    http:
      url: ftp://x
      method: "GE T"
      expected_status: [99]
      json: [{path: .status, equals: ok}]
      body_regex: "("
      headers: {"bad header": x}
  - name: c
    type: http
    http: {url: "http://x", bogus: 1}
  - name: d
    type: http
    http: {url: "http://x", max_body_bytes: many}
`
	// The configuration decodes every probe's settings with its type and
	// reports every problem at once.
	_, err := config.Parse([]byte(y), "h.yml", func(string) string { return "" }, httpcheck.Type().Kind)
	if err == nil {
		t.Fatal("accepted")
	}
	errs := []string{err.Error()}
	all := strings.Join(errs, "\n")
	for _, want := range []string{
		`h.yml:2: probe "a": http.url: missing`,
		`h.yml:7: probe "b": http.url: must be an http or https URL`,
		`http.method: "GE T" is not an HTTP method`,
		`http.expected_status: 99 is not an HTTP status`,
		`http.json[0].path: a dotted path`,
		`http.body_regex: error parsing regexp`,
		`http.headers: "bad header" is not a header name`,
		`h.yml:15: probe "c": http.bogus: unknown field`,
		"h.yml:18: probe \"d\": http: cannot unmarshal !!str `many` into int64",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing %q in:\n%v", want, all)
		}
	}
}

// TestHTTPProbeRedirectDropsCredentials: with follow_redirects, a redirect to
// another port, or to the same port under another host name (localhost for
// 127.0.0.1), gets neither the configured headers nor the bearer token; a
// redirect within the origin keeps them.
func TestHTTPProbeRedirectDropsCredentials(t *testing.T) {
	type hit struct{ path, key, auth, tenant string }
	var (
		mu  sync.Mutex
		log []hit
	)
	record := func(r *http.Request) {
		mu.Lock()
		log = append(log, hit{r.URL.Path, r.Header.Get("X-Api-Key"), r.Header.Get("Authorization"), r.Header.Get("X-Tenant-Id")})
		mu.Unlock()
	}
	capture := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { record(r) }))
	defer capture.Close()
	var origin *httptest.Server
	origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-port":
			http.Redirect(w, r, capture.URL+"/other-port", http.StatusFound)
		case "/to-localhost":
			http.Redirect(w, r, strings.Replace(origin.URL, "127.0.0.1", "localhost", 1)+"/localhost", http.StatusFound)
		case "/to-same":
			http.Redirect(w, r, "/same-origin", http.StatusFound)
		default:
			record(r)
		}
	}))
	defer origin.Close()
	if !strings.Contains(origin.URL, "127.0.0.1") {
		t.Fatalf("origin %s is not on 127.0.0.1", origin.URL)
	}
	for _, path := range []string{"/to-port", "/to-localhost", "/to-same"} {
		c := section(t, origin.URL+path, `follow_redirects: true
headers: {X-Api-Key: key-SECRET-5678, x-tenant-id: acme}
bearer_token: tok-SECRET-1234`)
		if r := run(t, c, 10*time.Second); r.Outcome != probes.OutcomeSuccess {
			t.Fatalf("%s: %s %s", path, r.Outcome, r.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string]bool{"/other-port": false, "/localhost": false, "/same-origin": true}
	if len(log) != len(want) {
		t.Fatalf("requests seen: %+v", log)
	}
	for _, h := range log {
		keep, ok := want[h.path]
		if !ok {
			t.Fatalf("unexpected request %+v", h)
		}
		got := h.key != "" || h.auth != "" || h.tenant != ""
		if got != keep || (keep && (h.key != "key-SECRET-5678" || h.auth != "Bearer tok-SECRET-1234")) {
			t.Errorf("%s: X-Api-Key %q, Authorization %q, x-tenant-id %q (credentials expected: %v)", h.path, h.key, h.auth, h.tenant, keep)
		}
	}
}
