package web

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

// TestUnauthenticatedControlRefused is issue 15's "Done when" 1 (the web
// side): with a token configured, /-/reload, /probe, run-now and silence
// changes refuse callers without it; a failed reload tells the caller
// nothing but that; without the lifecycle flag /-/reload is not there at all.
func TestUnauthenticatedControlRefused(t *testing.T) {
	var reloads atomic.Int32
	reloadErr := errors.New("/etc/secret/path/mxprobe.yml:3: field bogus not found")
	fail := atomic.Bool{}
	srv := New(Options{Registry: prometheus.NewRegistry(), EnableLifecycle: true, Reload: func() error {
		reloads.Add(1)
		if fail.Load() {
			return reloadErr
		}
		return nil
	}})
	f := newFixtureOn(t, srv, Settings{Token: testToken})
	f.srv.SetAlerts(&fakeAlerts{silences: map[string]Silence{"s1": {ID: "s1"}}})
	sil := `{"matchers":{"tenant":"acme"},"ends_at":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/-/reload", ""}, {"PUT", "/-/reload", ""},
		{"GET", "/probe?module=login&tenant=acme", ""}, {"GET", "/probe?module=versions", ""},
		{"POST", "/api/v1/probes/login/run?tenant=acme", ""},
		{"POST", "/api/v1/silences", sil}, {"DELETE", "/api/v1/silences/s1", ""},
	} {
		for _, tok := range []string{"", "wrong-token-of-some-length"} {
			f.srv.throttle.ok(netip.MustParseAddr("127.0.0.1")) // this test is not about the lock-out
			resp, body := f.do(c.method, c.path, tok, strings.NewReader(c.body))
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d %s", c.method, c.path, tok, resp.StatusCode, body)
			}
		}
	}
	if n := reloads.Load(); n != 0 {
		t.Fatalf("%d reloads without the token", n)
	}
	if n := f.runs.Load(); n != 0 {
		t.Fatalf("%d runs without the token", n)
	}
	if resp, body := f.do("POST", "/-/reload", testToken, nil); resp.StatusCode != 200 || reloads.Load() != 1 {
		t.Fatalf("authorised reload: %d %s", resp.StatusCode, body)
	}
	fail.Store(true)
	resp, body := f.do("POST", "/-/reload", testToken, nil)
	if resp.StatusCode != 500 || strings.TrimSpace(body) != "reload failed, see the log" {
		t.Fatalf("failed reload answer: %d %q", resp.StatusCode, body)
	}
	// A browser page on another origin cannot post to it even without a token.
	f.mu.Lock()
	f.st.Token = ""
	f.mu.Unlock()
	req, _ := http.NewRequest("POST", f.ts.URL+"/-/reload", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	if hr, err := f.ts.Client().Do(req); err != nil || hr.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin reload: %v %v", err, hr)
	} else {
		hr.Body.Close()
	}

	// Without --web.enable-lifecycle there is no /-/reload, token or not.
	off := New(Options{Registry: prometheus.NewRegistry(), Reload: func() error { reloads.Add(1); return nil }})
	g := newFixtureOn(t, off, Settings{Token: testToken})
	before := reloads.Load()
	for _, m := range []string{"POST", "PUT", "GET"} {
		for _, tok := range []string{"", testToken} {
			resp, _ := g.do(m, "/-/reload", tok, nil)
			if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s /-/reload without the lifecycle flag: %d", m, resp.StatusCode)
			}
		}
	}
	if reloads.Load() != before {
		t.Fatal("reload ran without the lifecycle flag")
	}
}

// newFixtureOn is newFixture on a given server.
func newFixtureOn(t *testing.T, srv *Server, st Settings) *fixture {
	f := newFixture(t, st)
	f.ts.Close()
	f.srv = srv
	f.srv.Enable(Features{Runner: f.engine, Results: f.hist, Settings: f.settings})
	f.ts = httptest.NewServer(f.srv.Handler())
	t.Cleanup(f.ts.Close)
	return f
}

// TestProbeAnonymousModules: an explicitly listed module runs without the
// token, the others still need it; HEAD starts nothing.
func TestProbeAnonymousModules(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken, ProbeAnonymous: []string{"versions"}})
	if resp, body := f.do("GET", "/probe?module=versions", "", nil); resp.StatusCode != 200 || !strings.Contains(body, "probe_success 1") {
		t.Fatalf("anonymous module: %d %s", resp.StatusCode, body)
	}
	if resp, _ := f.do("GET", "/probe?module=login&tenant=acme", "", nil); resp.StatusCode != 401 || f.runs.Load() != 0 {
		t.Fatalf("module not listed: %d, %d runs", resp.StatusCode, f.runs.Load())
	}
	if resp, _ := f.do("HEAD", "/probe?module=login&tenant=acme", testToken, nil); resp.StatusCode != 200 || f.runs.Load() != 0 {
		t.Fatalf("HEAD: %d, %d runs", resp.StatusCode, f.runs.Load())
	}
}

// TestProbeFloorConcurrentClients is "Done when" 2: eight clients calling
// /probe (and run-now) as fast as they can for 10 s start at most one run
// per probe and tenant per floor interval; the others get the cached result.
func TestProbeFloorConcurrentClients(t *testing.T) {
	const (
		floor    = 2 * time.Second
		duration = 10 * time.Second
	)
	var mu sync.Mutex
	starts := map[string][]time.Time{}
	prober := func(name string) probes.Prober {
		return probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
			mu.Lock()
			starts[name+"/"+tenant] = append(starts[name+"/"+tenant], time.Now())
			mu.Unlock()
			rec := probes.NewRecorder(name, "login", tenant)
			_ = rec.Step("login", func() error { time.Sleep(5 * time.Millisecond); return nil })
			return rec.Finish()
		})
	}
	engine := probes.NewEngine(8)
	engine.SetJobs([]*probes.Job{
		{Name: "login", Type: "login", Timeout: 10 * time.Second, Subjects: []string{"a", "b"}, Prober: prober("login")},
		{Name: "roundtrip", Type: "roundtrip", Timeout: 10 * time.Second, Subjects: []string{"a"}, Prober: prober("roundtrip")},
	})
	defer engine.Shutdown(time.Second)
	srv := New(Options{Registry: prometheus.NewRegistry()})
	srv.Enable(Features{Runner: engine, Results: history.New(5), Settings: func() Settings {
		return Settings{Token: testToken, RunFloor: floor}
	}})
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	paths := []string{"/probe?module=login&tenant=a", "/probe?module=login&tenant=b", "/probe?module=roundtrip&tenant=a",
		"/api/v1/probes/login/run?tenant=a", "/api/v1/probes/roundtrip/run?tenant=a"}
	var requests, failures atomic.Int64
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := i; time.Since(t0) < duration; n++ {
				p := paths[n%len(paths)]
				method := "GET"
				if strings.HasPrefix(p, "/api/") {
					method = "POST"
				}
				req, _ := http.NewRequest(method, ts.URL+p, nil)
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := ts.Client().Do(req)
				if err != nil {
					failures.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
				requests.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if failures.Load() != 0 {
		t.Fatalf("%d failed requests", failures.Load())
	}
	maxRuns := int(elapsed/floor) + 1
	mu.Lock()
	defer mu.Unlock()
	for _, k := range []string{"login/a", "login/b", "roundtrip/a"} {
		n := len(starts[k])
		t.Logf("%s: %d runs in %s for %d requests in all", k, n, elapsed.Round(time.Millisecond), requests.Load())
		if n == 0 || n > maxRuns {
			t.Errorf("%s: %d runs, want 1..%d (one per %s)", k, n, maxRuns, floor)
		}
	}
	if requests.Load() < 50 {
		t.Fatalf("only %d requests: the clients were not hammering", requests.Load())
	}
}

// TestWrongTokensAreSlowed: after a few wrong tokens from one address, that
// address is refused with 429, even with the right token, until the
// lock-out passes; sign-in attempts on the page count the same way.
func TestWrongTokensAreSlowed(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	f.srv.features.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	for i := range freeFails + 1 {
		if resp, _ := f.do("POST", "/api/v1/silences", fmt.Sprintf("wrong-token-%02d-xxxxxxxx", i), nil); resp.StatusCode != 401 {
			t.Fatalf("wrong token %d: %d", i, resp.StatusCode)
		}
	}
	resp, _ := f.do("POST", "/api/v1/probes/login/run?tenant=acme", testToken, nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || f.runs.Load() != 0 {
		t.Fatalf("locked-out address with the right token: %d (Retry-After %q)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// The status page and /metrics, which also look at tokens, are no oracle.
	f.mu.Lock()
	f.st.ProtectReads = true
	f.mu.Unlock()
	for _, p := range []string{"/", "/metrics", "/api/v1/results"} {
		if resp, _ := f.do("GET", p, testToken, nil); resp.StatusCode != http.StatusTooManyRequests {
			t.Errorf("GET %s while locked out: %d", p, resp.StatusCode)
		}
	}
	form := url.Values{"token": {testToken}}
	hr, err := f.ts.Client().PostForm(f.ts.URL+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("page sign-in while locked out: %d", hr.StatusCode)
	}
	clock.Add(int64(2 * time.Second))
	if resp, body := f.do("POST", "/api/v1/probes/login/run?tenant=acme", testToken, nil); resp.StatusCode != 200 {
		t.Fatalf("after the lock-out: %d %s", resp.StatusCode, body)
	}
	// The right token cleared the record: the next wrong one is a plain 401.
	if resp, _ := f.do("POST", "/api/v1/silences", "wrong-again-xxxxxxxxxx", nil); resp.StatusCode != 401 {
		t.Fatalf("after a success: %d", resp.StatusCode)
	}
}

// TestLogoutEndsSession is "Done when" 5: a session cookie copied before
// sign-out is refused afterwards.
func TestLogoutEndsSession(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken, ProtectReads: true})
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	page := postPage(t, c, f.ts.URL+"/login", url.Values{"token": {testToken}})
	if !strings.Contains(page, `data-probe="login"`) {
		t.Fatal("signed-in page lacks rows")
	}
	u, _ := url.Parse(f.ts.URL)
	var saved *http.Cookie
	for _, ck := range jar.Cookies(u) {
		if ck.Name == sessionCookie {
			saved = ck
		}
	}
	if saved == nil {
		t.Fatal("no session cookie")
	}
	replay := func() int {
		req, _ := http.NewRequest("GET", f.ts.URL+"/api/v1/results", nil)
		req.AddCookie(&http.Cookie{Name: saved.Name, Value: saved.Value})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := replay(); code != 200 {
		t.Fatalf("cookie before sign-out: %d", code)
	}
	postPage(t, c, f.ts.URL+"/logout", nil)
	if code := replay(); code != http.StatusUnauthorized {
		t.Fatalf("replayed cookie after sign-out: %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", f.ts.URL+"/", nil)
	req.AddCookie(&http.Cookie{Name: saved.Name, Value: saved.Value})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(string(b), `data-probe=`) {
		t.Fatalf("page with the replayed cookie: %d", resp.StatusCode)
	}
}

// TestCookieSecure: the Secure flag follows web.cookie_secure, or TLS as
// reported by X-Forwarded-Proto from a trusted proxy only.
func TestCookieSecure(t *testing.T) {
	yes := true
	for _, c := range []struct {
		name   string
		st     Settings
		remote string
		proto  string
		want   bool
	}{
		{"plain", Settings{}, "192.0.2.1:5555", "", false},
		{"untrusted proxy header", Settings{}, "192.0.2.1:5555", "https", false},
		{"trusted proxy", Settings{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, "192.0.2.1:5555", "https", true},
		{"forced", Settings{CookieSecure: &yes}, "192.0.2.1:5555", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := c.st
			st.Token = testToken
			srv := New(Options{Registry: prometheus.NewRegistry()})
			srv.Enable(Features{Settings: func() Settings { return st }})
			req := httptest.NewRequest("POST", "/login", strings.NewReader("token="+testToken))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = c.remote
			if c.proto != "" {
				req.Header.Set("X-Forwarded-Proto", c.proto)
			}
			rr := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rr, req)
			cs := rr.Result().Cookies()
			if len(cs) != 1 || cs[0].Secure != c.want || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
				t.Fatalf("cookies %+v, want Secure=%v", cs, c.want)
			}
		})
	}
}

// TestMetricsProtectedWithScrapeToken: with protect_reads, /metrics needs a
// token; the metrics token works there and nowhere else.
func TestMetricsProtectedWithScrapeToken(t *testing.T) {
	const scrape = "scrape-SECRET-token-123"
	f := newFixture(t, Settings{Token: testToken, MetricsToken: scrape})
	if resp, _ := f.do("GET", "/metrics", "", nil); resp.StatusCode != 200 {
		t.Fatalf("/metrics without protect_reads: %d", resp.StatusCode)
	}
	f.mu.Lock()
	f.st.ProtectReads = true
	f.mu.Unlock()
	for tok, want := range map[string]int{"": 401, scrape: 200, testToken: 200} {
		if resp, _ := f.do("GET", "/metrics", tok, nil); resp.StatusCode != want {
			t.Errorf("/metrics with %q: %d, want %d", tok, resp.StatusCode, want)
		}
	}
	for _, p := range []string{"/api/v1/results", "/probe?module=versions"} {
		if resp, _ := f.do("GET", p, scrape, nil); resp.StatusCode != 401 {
			t.Errorf("metrics token on %s: %d", p, resp.StatusCode)
		}
	}
}

// serveReal runs the server through Serve on a loopback port and returns
// its address.
func serveReal(t *testing.T, srv *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := ""
	go func() {
		done <- srv.Serve(ctx, &web.FlagConfig{WebListenAddresses: &[]string{"127.0.0.1:0"}, WebSystemdSocket: new(bool), WebConfigFile: &cfg})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv.mu.RLock()
		n := len(srv.limiters)
		var addr string
		if n > 0 {
			addr = srv.limiters[0].Addr().String()
		}
		srv.mu.RUnlock()
		if addr != "" {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSlowBodyIsCut is "Done when" 4 (first part): a request body trickled
// a byte at a time is cut once the read timeout has passed.
func TestSlowBodyIsCut(t *testing.T) {
	const timeout = 700 * time.Millisecond
	srv := New(Options{Registry: prometheus.NewRegistry(), ReadTimeout: timeout})
	srv.Enable(Features{Settings: func() Settings { return Settings{Token: testToken} }})
	addr := serveReal(t, srv)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t0 := time.Now()
	fmt.Fprintf(conn, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	}()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, bufio.NewReader(conn)) // the answer, then the close
	el := time.Since(t0)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %s", el)
	}
	if el > timeout+5*time.Second {
		t.Fatalf("cut after %s, read timeout %s", el, timeout)
	}
	t.Logf("trickled body cut after %s (read timeout %s)", el.Round(time.Millisecond), timeout)
}

// TestIdleConnectionsDoNotBlockMetrics is "Done when" 4 (second part):
// 1,000 connections (five times the connection cap) that stay silent, send
// half their headers, or trickle a request body (read by the handler, or
// drained by the server) do not stop /metrics from answering at once, and
// the open connections stay within the cap.
func TestIdleConnectionsDoNotBlockMetrics(t *testing.T) {
	const maxConns = 200
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "mxprobe_test_gauge", Help: "x"}))
	srv := New(Options{Registry: reg, MaxConnections: maxConns, ReadTimeout: time.Minute, ReadHeaderTimeout: time.Minute})
	srv.Enable(Features{Settings: func() Settings { return Settings{Token: testToken} }})
	addr := serveReal(t, srv)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range 1000 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("after %d connections: %v", len(held), err)
		}
		held = append(held, c)
		kind := i % 3
		if i >= 1000-maxConns-50 {
			kind = 3 // enough of these to fill every slot on their own
		}
		switch kind {
		case 1: // half the headers
			_, _ = c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
		case 2: // the headers and the start of a form that never ends (the handler reads it)
			_, _ = c.Write([]byte("POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=a"))
		case 3: // a body the handler ignores (the server drains it while answering)
			_, _ = c.Write([]byte("POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx"))
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 5 {
		t0 := time.Now()
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape %d with 1000 slow connections: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "mxprobe_test_gauge") {
			t.Fatalf("scrape %d: %d", i, resp.StatusCode)
		}
		t.Logf("scrape %d answered in %s", i, time.Since(t0).Round(time.Millisecond))
	}
	srv.mu.RLock()
	open := srv.limiters[0].open()
	srv.mu.RUnlock()
	if open > maxConns {
		t.Fatalf("%d connections open, cap %d", open, maxConns)
	}
}

// TestClientGoneLogsAtDebug: write errors of clients that went away are
// debug lines; other errors stay errors.
func TestClientGoneLogsAtDebug(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug})
	w := levelWriter{slog.New(h)}
	_, _ = w.Write([]byte("error encoding and sending metric family: write tcp 127.0.0.1:9787->127.0.0.1:5555: write: broken pipe\n"))
	_, _ = w.Write([]byte("http: TLS handshake error from 192.0.2.1:4444: EOF\n"))
	_, _ = w.Write([]byte("something real broke\n"))
	out := buf.String()
	if strings.Count(out, "level=DEBUG") != 2 || strings.Count(out, "level=ERROR") != 1 {
		t.Fatalf("levels:\n%s", out)
	}
	if !clientGone(&net.OpError{Op: "write", Err: errors.New("broken pipe")}) {
		t.Fatal("broken pipe not recognised")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestClientThatDoesNotReadIsCut: a handler writing to a client that never
// reads is released once a write stalls for WriteStall (the connection then
// closes), and a keep-alive connection is not hurt by the deadline of an
// earlier request.
func TestClientThatDoesNotReadIsCut(t *testing.T) {
	const stall = 500 * time.Millisecond
	srv := New(Options{Registry: prometheus.NewRegistry(), WriteStall: stall})
	srv.Enable(Features{Settings: func() Settings { return Settings{} }})
	released := make(chan error, 1)
	srv.Mux.HandleFunc("GET /test-endless", func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for {
			if _, err := w.Write(chunk); err != nil {
				released <- err
				return
			}
		}
	})
	addr := serveReal(t, srv)

	// A well-behaved keep-alive client: two requests, the second after the
	// first request's write deadline would have passed.
	client := &http.Client{Timeout: 20 * time.Second}
	for i := range 2 {
		resp, err := client.Get("http://" + addr + "/-/healthy")
		if err != nil {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("keep-alive request %d: %d", i, resp.StatusCode)
		}
		if i == 0 {
			time.Sleep(2 * stall) // lets the first request's deadline pass (what is tested, not a sync point)
		}
	}
	client.CloseIdleConnections()

	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /test-endless HTTP/1.1\r\nHost: x\r\n\r\n")
	t0 := time.Now()
	select {
	case err := <-released:
		t.Logf("handler released after %s by %v (write stall %s)", time.Since(t0).Round(time.Millisecond), err, stall)
	case <-time.After(30 * time.Second):
		t.Fatal("a client that does not read still holds its handler after 30 s")
	}
}

// TestThrottleFullTableFailsClosed: once the table holds maxTracked live
// records (here every one locked out, which main's sweep could not free),
// an address without a record is refused unchecked instead of guessing
// unthrottled; a correct token freeing a slot, or the oldest record being
// forgotten, opens it again.
func TestThrottleFullTableFailsClosed(t *testing.T) {
	var th throttle
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range maxTracked {
		for range freeFails + 1 {
			th.fail(addr(i), t0.Add(time.Duration(i)*time.Millisecond))
		}
	}
	now := t0.Add(20 * time.Second)
	newcomer := netip.MustParseAddr("192.0.2.7")
	guesses := 0
	for range 50 {
		if th.wait(newcomer, now) > 0 {
			break
		}
		th.fail(newcomer, now)
		guesses++
	}
	if guesses > 1 {
		t.Fatalf("full table: a new address made %d wrong guesses unthrottled", guesses)
	}
	if w := th.wait(newcomer, now); w <= 0 || w > forgetAfter {
		t.Fatalf("full table: new address waits %v", w)
	}
	// A correct token from a tracked address frees its slot.
	th.ok(addr(5))
	if w := th.wait(newcomer, now); w != 0 {
		t.Fatalf("a slot is free, the new address still waits %v", w)
	}
	th.fail(newcomer, now)
	if th.m[newcomer] == nil {
		t.Fatal("the new address was not recorded in the free slot")
	}
	// Full again; once the oldest records are forgotten, newcomers are
	// tracked again.
	other := netip.MustParseAddr("192.0.2.8")
	th.fail(other, now)
	if th.wait(other, now) == 0 {
		t.Fatal("full again: not closed")
	}
	later := t0.Add(forgetAfter + time.Minute)
	if w := th.wait(other, later); w != 0 {
		t.Fatalf("after the oldest record is forgotten: waits %v", w)
	}
	th.fail(other, later)
	if th.m[other] == nil || len(th.m) > maxTracked {
		t.Fatalf("after forgetting: recorded %v, %d records", th.m[other] != nil, len(th.m))
	}
}
