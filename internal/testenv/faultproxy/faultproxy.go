// Package faultproxy is a reverse proxy for tests that sits in front of a
// real server (the local Dendrite, an emulator) and injects faults into the
// requests that match its rules: delays, canned answers (a 429 with
// retry_after_ms, a 502), connection resets, slow or cut bodies, hangs.
// Requests no rule matches pass through unchanged.
//
// It is used by tests and the demo only, never by the daemon.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what happens to a matching request. Delay applies first; then,
// in this order, the first of Reset, Hang, Status is done instead of
// forwarding; otherwise the request is forwarded and SlowBody / CutBody
// shape the upstream answer.
type Fault struct {
	// Delay holds the request this long before anything else (forwarded
	// requests arrive upstream this much later).
	Delay time.Duration
	// Reset closes the client's connection abruptly (TCP RST) without an answer.
	Reset bool
	// Hang holds the request until the client gives up or the proxy closes.
	Hang bool
	// Status answers with this status, Header and Body instead of forwarding.
	Status int
	Header http.Header
	Body   []byte
	// SlowBody spreads the upstream body over this duration, in small chunks.
	SlowBody time.Duration
	// CutBody sends only the first half of the upstream body, then resets.
	CutBody bool
}

// Rule selects requests and says what to do with them.
type Rule struct {
	// Method matches the HTTP method; empty matches any.
	Method string
	// Path is a regular expression matched against the URL path (unanchored,
	// so "/send/" matches any path containing it); empty matches any.
	Path string
	// Times applies the fault to the first Times matching requests only, then
	// lets them through; 0 means always.
	Times int
	// OnMatch, if set, is called for every request the fault is applied to,
	// before the fault.
	OnMatch func(*http.Request)
	Fault
}

// Handle is an installed rule; it counts the requests it applied to.
type Handle struct {
	rule    Rule
	re      *regexp.Regexp
	hits    atomic.Int64
	removed atomic.Bool
	p       *Proxy
}

// Hits returns how many requests the rule's fault was applied to.
func (h *Handle) Hits() int { return int(h.hits.Load()) }

// Remove uninstalls the rule.
func (h *Handle) Remove() {
	h.removed.Store(true)
	h.p.mu.Lock()
	defer h.p.mu.Unlock()
	for i, r := range h.p.rules {
		if r == h {
			h.p.rules = append(h.p.rules[:i:i], h.p.rules[i+1:]...)
			return
		}
	}
}

// Proxy is a running fault-injecting reverse proxy.
type Proxy struct {
	// URL is where clients should send their requests.
	URL    string
	Target *url.URL

	srv    *httptest.Server
	rp     *httputil.ReverseProxy
	closed chan struct{}
	once   sync.Once

	mu    sync.Mutex
	rules []*Handle
	// total counts every request seen.
	total atomic.Int64
}

// New starts a proxy in front of target (a base URL such as
// http://127.0.0.1:8008).
func New(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: bad target URL %q", target)
	}
	p := &Proxy{Target: u, closed: make(chan struct{})}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			http.Error(w, "faultproxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.URL = p.srv.URL
	return p, nil
}

// Close stops the proxy, releasing hung requests.
func (p *Proxy) Close() {
	p.once.Do(func() { close(p.closed) })
	p.srv.CloseClientConnections()
	p.srv.Close()
	if tr, ok := p.rp.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// Add installs a rule; rules are tried in the order they were added and the
// first that matches (and has applications left) wins. It panics on a bad
// Path expression, which is a bug in the test.
func (p *Proxy) Add(r Rule) *Handle {
	h := &Handle{rule: r, p: p}
	if r.Path != "" {
		h.re = regexp.MustCompile(r.Path)
	}
	p.mu.Lock()
	p.rules = append(p.rules, h)
	p.mu.Unlock()
	return h
}

// Clear removes every rule.
func (p *Proxy) Clear() {
	p.mu.Lock()
	rules := p.rules
	p.rules = nil
	p.mu.Unlock()
	for _, h := range rules {
		h.removed.Store(true)
	}
}

// Requests returns how many requests the proxy has seen.
func (p *Proxy) Requests() int { return int(p.total.Load()) }

// match finds the rule for r and takes one application of it.
func (p *Proxy) match(r *http.Request) *Handle {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.rules {
		if h.rule.Method != "" && h.rule.Method != r.Method {
			continue
		}
		if h.re != nil && !h.re.MatchString(r.URL.Path) {
			continue
		}
		if h.rule.Times > 0 && h.hits.Load() >= int64(h.rule.Times) {
			continue
		}
		h.hits.Add(1)
		return h
	}
	return nil
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.total.Add(1)
	h := p.match(r)
	if h == nil {
		p.rp.ServeHTTP(w, r)
		return
	}
	f := h.rule.Fault
	if h.rule.OnMatch != nil {
		h.rule.OnMatch(r)
	}
	if f.Delay > 0 && !p.sleep(r.Context(), f.Delay) {
		return
	}
	switch {
	case f.Reset:
		reset(w)
		return
	case f.Hang:
		select {
		case <-r.Context().Done():
		case <-p.closed:
		}
		return
	case f.Status != 0:
		// Drain the request so keep-alive connections stay usable.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		for k, vs := range f.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		if w.Header().Get("Content-Type") == "" && len(f.Body) > 0 && f.Body[0] == '{' {
			w.Header().Set("Content-Type", "application/json")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(f.Body)))
		w.WriteHeader(f.Status)
		_, _ = w.Write(f.Body)
		return
	}
	if f.SlowBody > 0 || f.CutBody {
		p.shaped(w, r, f)
		return
	}
	p.rp.ServeHTTP(w, r)
}

// shaped forwards r, then writes the upstream answer slowly or cut short.
func (p *Proxy) shaped(w http.ResponseWriter, r *http.Request, f Fault) {
	rec := &bufferWriter{header: http.Header{}}
	p.rp.ServeHTTP(rec, r)
	body := rec.buf.Bytes()
	for k, vs := range rec.header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	fl, _ := w.(http.Flusher)
	if f.CutBody {
		_, _ = w.Write(body[:len(body)/2])
		if fl != nil {
			fl.Flush()
		}
		reset(w)
		return
	}
	const chunks = 10
	step := max(1, (len(body)+chunks-1)/chunks)
	pause := f.SlowBody / chunks
	for off := 0; off < len(body); off += step {
		end := min(len(body), off+step)
		if _, err := w.Write(body[off:end]); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
		if end < len(body) && !p.sleep(r.Context(), pause) {
			return
		}
	}
}

// sleep waits d unless the client goes away or the proxy closes first.
func (p *Proxy) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-p.closed:
	}
	return false
}

// reset closes the client connection with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

type bufferWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(s int) {
	if b.status == 0 {
		b.status = s
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.buf.Write(p)
}

// MatrixError is a Fault answering status with a Matrix error body; extra
// fields (retry_after_ms, soft_logout) are merged into it.
func MatrixError(status int, errcode, msg string, extra map[string]any) Fault {
	body := map[string]any{"errcode": errcode, "error": msg}
	for k, v := range extra {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	return Fault{Status: status, Body: b, Header: http.Header{"Content-Type": {"application/json"}}}
}

// RateLimited is a 429 M_LIMIT_EXCEEDED asking to wait retryAfter.
func RateLimited(retryAfter time.Duration) Fault {
	return MatrixError(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests",
		map[string]any{"retry_after_ms": retryAfter.Milliseconds()})
}

// UnknownToken is a 401 M_UNKNOWN_TOKEN, with soft_logout when soft.
func UnknownToken(soft bool) Fault {
	return MatrixError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown access token",
		map[string]any{"soft_logout": soft})
}
