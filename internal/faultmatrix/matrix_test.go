package faultmatrix

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/faultproxy"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// gate is a TCP front with a fixed address in front of a fault proxy: it can
// be shut (connection refused, live connections reset) and opened again on
// the same port, and it passes resets from the proxy on as resets.
type gate struct {
	addr, target string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{addr: fmt.Sprintf("127.0.0.1:%d", port), target: target, conns: map[net.Conn]bool{}}
	if err := g.open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.shut(); g.wg.Wait() })
	return g
}

func (g *gate) open() error {
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger a moment after shut
		if l, err = net.Listen("tcp", g.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.l = l
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !g.track(c, true) {
				c.Close()
				return
			}
			g.wg.Add(1)
			go g.pipe(c)
		}
	}()
	return nil
}

func (g *gate) track(c net.Conn, add bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if add {
		if g.l == nil {
			return false
		}
		g.conns[c] = true
	} else {
		delete(g.conns, c)
	}
	return true
}

func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (g *gate) pipe(c net.Conn) {
	defer g.wg.Done()
	defer g.track(c, false)
	u, err := net.DialTimeout("tcp", g.target, 2*time.Second)
	if err != nil {
		rst(c)
		return
	}
	g.track(u, true)
	defer g.track(u, false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(u, c)
		if tc, ok := u.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, err = io.Copy(c, u)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		rst(c) // the proxy reset: so does the gate
	} else {
		_ = c.Close()
	}
	_ = u.Close()
	<-done
}

// shut refuses new connections and resets the open ones.
func (g *gate) shut() {
	g.mu.Lock()
	l := g.l
	g.l = nil
	conns := g.conns
	g.conns = map[net.Conn]bool{}
	g.mu.Unlock()
	if l != nil {
		_ = l.Close()
	}
	for c := range conns {
		rst(c)
	}
}

// via routes the requests for one host through the gate; everything else
// goes direct. The probe keeps its configured URLs: only the path changes.
type via struct {
	base *http.Transport
	from string // host:port of the real dependency
	to   string // host:port of the gate
}

func (v *via) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == v.from {
		r2 := r.Clone(r.Context())
		r2.URL.Host = v.to
		r2.Host = v.from
		resp, err := v.base.RoundTrip(r2)
		if resp != nil {
			resp.Request = r // redirects resolve against the URL the client asked for
		}
		return resp, err
	}
	return v.base.RoundTrip(r)
}

func newTransport() *http.Transport {
	return mxclient.NewHTTPClient().Transport.(*http.Transport)
}

// fault is one column of the matrix.
type fault struct {
	name    string
	install func(c *cell) (undo func())
}

// cell is one dependency × fault run.
type cell struct {
	t     *testing.T
	dep   *dependency
	proxy *faultproxy.Proxy
	gate  *gate
}

func (c *cell) rule(f faultproxy.Fault) func() {
	h := c.proxy.Add(faultproxy.Rule{Path: c.dep.path, Fault: f})
	return h.Remove
}

var hugeBody = func() []byte {
	b := make([]byte, 0, 12<<20+16)
	b = append(b, `{"x":"`...)
	b = append(b, bytes.Repeat([]byte("a"), 12<<20)...)
	return append(b, `"}`...)
}()

const (
	fRefused      = "refused"
	fReset        = "reset_mid_body"
	fSlowHeaders  = "slow_headers"
	fSlowBody     = "slow_body"
	f5xx          = "http_502"
	f429Retry     = "429_retry_after"
	f429          = "429_no_retry_after"
	fMalformed    = "malformed_json"
	fContentType  = "wrong_content_type"
	fRedirectLoop = "redirect_loop"
	fHuge         = "huge_body"
)

var faults = []fault{
	{fRefused, func(c *cell) func() {
		c.gate.shut()
		// The process is gone a moment before the run: the client's idle
		// connections have seen their reset, as they would in real life.
		time.Sleep(100 * time.Millisecond)
		return func() {
			if err := c.gate.open(); err != nil {
				c.t.Fatal(err)
			}
		}
	}},
	{fReset, func(c *cell) func() { return c.rule(faultproxy.Fault{CutBody: true}) }},
	{fSlowHeaders, func(c *cell) func() { return c.rule(faultproxy.Fault{Delay: time.Minute}) }},
	{fSlowBody, func(c *cell) func() { return c.rule(faultproxy.Fault{SlowBody: time.Minute}) }},
	{f5xx, func(c *cell) func() {
		return c.rule(faultproxy.Fault{Status: http.StatusBadGateway, Body: []byte("<html><body>502 Bad Gateway</body></html>"),
			Header: http.Header{"Content-Type": {"text/html"}}})
	}},
	{f429Retry, func(c *cell) func() {
		f := faultproxy.RateLimited(100 * time.Millisecond)
		f.Header.Set("Retry-After", "1")
		return c.rule(f)
	}},
	{f429, func(c *cell) func() {
		return c.rule(faultproxy.MatrixError(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests", nil))
	}},
	{fMalformed, func(c *cell) func() {
		return c.rule(faultproxy.Fault{Status: http.StatusOK, Body: []byte(`{"ok": tru, "room_id": "!x`),
			Header: http.Header{"Content-Type": {"application/json"}}})
	}},
	{fContentType, func(c *cell) func() {
		return c.rule(faultproxy.Fault{Status: http.StatusOK, Body: []byte("<!doctype html><html><body>Welcome to nginx!</body></html>"),
			Header: http.Header{"Content-Type": {"text/html"}}})
	}},
	{fRedirectLoop, func(c *cell) func() {
		return c.rule(faultproxy.Fault{Status: http.StatusFound, Header: http.Header{"Location": {c.dep.loop}}})
	}},
	{fHuge, func(c *cell) func() {
		return c.rule(faultproxy.Fault{Status: http.StatusOK, Body: hugeBody, Header: http.Header{"Content-Type": {"application/json"}}})
	}},
}

// want is what a cell must show. An empty class accepts any failure class
// (notifiers report delivery errors, not classes); ok means the fault is
// harmless there (the body is not read).
type want struct {
	class probes.Class
	step  string
	ok    bool
	// warning: the run is a warning (rate limited), not a failure.
	warning bool
}

// dependency is one row of the matrix.
type dependency struct {
	name string
	// path selects the faulted requests (regexp on the URL path); loop is
	// the Location of the redirect loop (a path the rule matches again).
	path, loop string
	timeout    time.Duration
	// start brings the dependency up and returns its real base URL and a
	// constructor for the faulted and the healthy subject's probers.
	start func(t *testing.T) (base string, build func(faulted, healthy *http.Client) (probes.Prober, probes.Prober))
	// want gives the expectation per fault; def is the default.
	def  func(f string) want
	want map[string]want
}

func (d *dependency) expect(f string) want {
	if w, ok := d.want[f]; ok {
		return w
	}
	return d.def(f)
}

// stdWant is the expectation for a dependency whose probe reads JSON, with
// the failing step named step.
func stdWant(step string) func(string) want {
	return func(f string) want {
		switch f {
		case fRefused:
			return want{class: probes.ClassUnreachable, step: step}
		case fSlowHeaders, fSlowBody:
			return want{class: probes.ClassTimeout, step: step}
		case f5xx:
			return want{class: probes.ClassHTTP5xx, step: step}
		case f429Retry, f429:
			return want{class: probes.ClassRateLimited, step: step, warning: true}
		}
		return want{class: probes.ClassBadResponse, step: step}
	}
}

func hostOf(t *testing.T, base string) string {
	t.Helper()
	u := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

func runCell(t *testing.T, dep *dependency, f fault) {
	base, build := dep.start(t)
	host := hostOf(t, base)
	proxy, err := faultproxy.New("http://" + host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	g := newGate(t, hostOf(t, proxy.URL))
	ft := &via{base: newTransport(), from: host, to: g.addr}
	ht := newTransport()
	t.Cleanup(func() { ft.base.CloseIdleConnections(); ht.CloseIdleConnections() })
	pf, ph := build(&http.Client{Transport: ft}, &http.Client{Transport: ht})

	engine := probes.NewEngine(4)
	engine.SetJobs([]*probes.Job{
		{Name: "faulted", Type: dep.name, Timeout: dep.timeout, Subjects: []string{"t"}, Prober: pf},
		{Name: "healthy", Type: dep.name, Timeout: dep.timeout, Subjects: []string{"t"}, Prober: ph},
	})
	defer engine.Shutdown(0)
	run := func(job string) probes.Result {
		ctx, cancel := context.WithTimeout(context.Background(), dep.timeout+10*time.Second)
		defer cancel()
		r, err := engine.Run(ctx, job, "t")
		if err != nil {
			t.Fatalf("%s run: %v", job, err)
		}
		return r
	}
	describe := func(r probes.Result) string {
		var steps []string
		for _, s := range r.Steps {
			st := s.Name
			if !s.OK {
				st += "!" + string(s.Class)
			}
			steps = append(steps, st)
		}
		return fmt.Sprintf("%s class=%q step=%q err=%q steps=%v", r.Outcome, r.Class, r.FailedStep, r.Error, steps)
	}

	// Warm-up: sessions cached, previous scrape stored, both subjects fine.
	if r := run("faulted"); !r.OK() {
		t.Fatalf("warm-up run failed before any fault: %s", describe(r))
	}

	undo := f.install(&cell{t: t, dep: dep, proxy: proxy, gate: g})
	var faulted, healthy probes.Result
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); faulted = run("faulted") }()
	go func() {
		defer wg.Done()
		time.Sleep(20 * time.Millisecond) // the faulted run starts first
		healthy = run("healthy")
	}()
	wg.Wait()
	undo()

	w := dep.expect(f.name)
	switch {
	case w.ok:
		if !faulted.OK() {
			t.Errorf("fault should be harmless here, got %s", describe(faulted))
		}
	case faulted.Outcome == probes.OutcomeSuccess:
		t.Errorf("fault not detected: %s", describe(faulted))
	default:
		if w.class != "" && faulted.Class != w.class {
			t.Errorf("class %q, want %q: %s", faulted.Class, w.class, describe(faulted))
		}
		if faulted.FailedStep != w.step {
			t.Errorf("failed step %q, want %q: %s", faulted.FailedStep, w.step, describe(faulted))
		}
		if w.warning != (faulted.Outcome == probes.OutcomeWarning) {
			t.Errorf("outcome %s, want warning=%v: %s", faulted.Outcome, w.warning, describe(faulted))
		}
	}
	if strings.Contains(faulted.Error, "panic") {
		t.Errorf("panic reported: %s", faulted.Error)
	}
	if faulted.Duration > dep.timeout+2*time.Second {
		t.Errorf("run took %s, beyond its %s deadline", faulted.Duration, dep.timeout)
	}
	// The other subject's run is not held up by the fault.
	if !healthy.OK() {
		t.Errorf("healthy subject failed during the fault: %s", describe(healthy))
	}
	if (f.name == fSlowHeaders || f.name == fSlowBody) && !w.ok {
		// The faulted run is held to its deadline; the other one is not.
		if hEnd, fEnd := healthy.Started.Add(healthy.Duration), faulted.Started.Add(faulted.Duration); !hEnd.Before(fEnd) {
			t.Errorf("healthy subject (%s) did not finish before the held run (%s)", healthy.Duration, faulted.Duration)
		}
	}
	// Recovery: the next run once the fault is gone succeeds.
	if r := run("faulted"); !r.OK() {
		t.Errorf("no recovery after the fault was removed: %s", describe(r))
	}
	t.Logf("%s × %s: %s", dep.name, f.name, describe(faulted))
}

// TestFaultMatrix runs every dependency × fault cell. Cells of one
// dependency run one after another; dependencies run in parallel (2 at a
// time on a 2-core machine, see -parallel).
func TestFaultMatrix(t *testing.T) {
	for _, dep := range dependencies() {
		t.Run(dep.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range faults {
				t.Run(f.name, func(t *testing.T) { runCell(t, dep, f) })
			}
		})
	}
}

// isTimeout reports a deadline error, for the notifiers' unclassified errors.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, syscall.ETIMEDOUT)
}
