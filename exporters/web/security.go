package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// Defaults of the hardening settings.
const (
	// DefaultRunFloor is the least time between two fresh runs of one probe
	// and tenant started over HTTP (/probe, run-now); callers in between get
	// the last result.
	DefaultRunFloor = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request, body included.
	DefaultReadTimeout = 15 * time.Second
	// DefaultReadHeaderTimeout bounds reading the request headers.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultMaxConnections caps concurrent connections; at the cap, the
	// connection that waited on its client the longest is closed.
	DefaultMaxConnections = 512
	// DefaultWriteStall bounds each write of an answer to a client that
	// does not read.
	DefaultWriteStall = 30 * time.Second
	// MinTokenLength is the shortest API or metrics token accepted.
	MinTokenLength = 16
)

// --- who is asking ------------------------------------------------------

// clientAddr is the address a request comes from: the connection's peer, or,
// when the peer is a trusted proxy, the nearest untrusted address in
// X-Forwarded-For.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap()
	if !isTrusted(a, trusted) {
		return a
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return a
		}
		h = h.Unmap()
		if !isTrusted(h, trusted) {
			return h
		}
	}
	return a
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// secureRequest reports whether the browser reached us over https: TLS on
// our own listener, or X-Forwarded-Proto: https from a trusted proxy.
func secureRequest(r *http.Request, trusted []netip.Prefix) bool {
	if r.TLS != nil {
		return true
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !isTrusted(ap.Addr().Unmap(), trusted) {
		return false
	}
	return strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

// --- failed sign-ins and bad tokens -----------------------------------------

// throttle slows down guessing: after freeFails wrong tokens from one client
// address (an IPv6 /64 counts as one), each further wrong one locks that
// address out for twice as long as the previous, up to maxPenalty; while
// locked out, every token it sends is refused with 429 unchecked. A correct
// token clears the record; records are forgotten after forgetAfter.
//
// The table holds at most maxTracked addresses. When it is full of records
// younger than forgetAfter, it fails closed: an address without a record is
// refused unchecked, like a locked-out one, until the oldest record is
// forgotten or a correct token frees a slot. Admitting newcomers untracked
// would give an attacker with many addresses unthrottled guesses; evicting
// records would let it reset its own.
type throttle struct {
	mu sync.Mutex
	m  map[netip.Addr]*failState
	// closedUntil: while the table is full, addresses without a record
	// are refused until then (when the oldest record is forgotten).
	closedUntil time.Time
}

type failState struct {
	fails int
	last  time.Time
	until time.Time
}

const (
	freeFails   = 5
	maxPenalty  = time.Minute
	forgetAfter = 15 * time.Minute
	maxTracked  = 10000
)

func throttleKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return a
}

// wait returns how long the address is still locked out (0: not).
func (t *throttle) wait(a netip.Addr, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.m[throttleKey(a)]
	if st == nil {
		if len(t.m) >= maxTracked && now.Before(t.closedUntil) {
			return t.closedUntil.Sub(now)
		}
		return 0
	}
	if !now.Before(st.until) {
		return 0
	}
	return st.until.Sub(now)
}

func (t *throttle) fail(a netip.Addr, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[netip.Addr]*failState{}
	}
	k := throttleKey(a)
	st := t.m[k]
	if st == nil {
		if len(t.m) >= maxTracked {
			var oldest time.Time
			for k2, s2 := range t.m {
				if now.Sub(s2.last) > forgetAfter && !now.Before(s2.until) {
					delete(t.m, k2)
				} else if oldest.IsZero() || s2.last.Before(oldest) {
					oldest = s2.last
				}
			}
			if len(t.m) >= maxTracked {
				// Full of live records: refuse newcomers until the oldest
				// is forgotten (see the type's comment).
				t.closedUntil = oldest.Add(forgetAfter + time.Nanosecond)
				return
			}
		}
		st = &failState{}
		t.m[k] = st
	}
	if now.Sub(st.last) > forgetAfter {
		st.fails = 0
	}
	st.fails++
	st.last = now
	if st.fails > freeFails {
		pen := time.Second << min(st.fails-freeFails-1, 10)
		st.until = now.Add(min(pen, maxPenalty))
	}
}

func (t *throttle) ok(a netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, throttleKey(a))
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	secs := int(wait/time.Second) + 1
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	http.Error(w, "too many wrong tokens from this address: try again in "+strconv.Itoa(secs)+"s", http.StatusTooManyRequests)
}

// --- sessions -----------------------------------------------------------

// sessionStore keeps the status page's sessions server-side, so signing out
// ends the session for good (a replayed cookie finds nothing), and a new
// token ends every session made with the old one.
type sessionStore struct {
	mu sync.Mutex
	m  map[string]sessionEntry
}

type sessionEntry struct {
	exp     time.Time
	tokenID string
}

const maxSessions = 1024

func (ss *sessionStore) create(tokenID string, now time.Time) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	id := base64.RawURLEncoding.EncodeToString(b)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = map[string]sessionEntry{}
	}
	if len(ss.m) >= maxSessions {
		var oldest string
		for k, e := range ss.m {
			if !now.Before(e.exp) || e.tokenID != tokenID {
				delete(ss.m, k)
			} else if oldest == "" || e.exp.Before(ss.m[oldest].exp) {
				oldest = k
			}
		}
		if len(ss.m) >= maxSessions {
			delete(ss.m, oldest)
		}
	}
	ss.m[id] = sessionEntry{exp: now.Add(sessionTTL), tokenID: tokenID}
	return id
}

func (ss *sessionStore) valid(id, tokenID string, now time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e, ok := ss.m[id]
	if !ok {
		return false
	}
	if !now.Before(e.exp) || e.tokenID != tokenID {
		delete(ss.m, id)
		return false
	}
	return true
}

func (ss *sessionStore) end(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.m, id)
}

// --- one fresh run per floor ----------------------------------------------

// floorRun is the last fresh run started over HTTP for one probe and tenant.
type floorRun struct {
	started time.Time
	done    chan struct{}
	res     probes.Result
	err     error
	joined  int // requests that joined this run (under floorMu)
}

// floorJoined is how many requests joined the run-now of probe and tenant
// started last (a sync point for tests).
func (s *Server) floorJoined(probe, tenant string) int {
	s.floorMu.Lock()
	defer s.floorMu.Unlock()
	if fr := s.floors[probe+"\x00"+tenant]; fr != nil {
		return fr.joined
	}
	return 0
}

// runFloored runs probe for tenant, unless a run started over HTTP less than
// the floor ago (or still going): then it waits for that run and returns its
// Result (cached=true). The run itself is bounded by RunTimeout, not by ctx:
// a caller that gives up does not cancel it for the others.
func (s *Server) runFloored(ctx context.Context, probe, tenant string, floor time.Duration) (res probes.Result, cached bool, err error) {
	if floor <= 0 {
		floor = DefaultRunFloor
	}
	key := probe + "\x00" + tenant
	now := s.features.Now()
	s.floorMu.Lock()
	fr := s.floors[key]
	if fr == nil || (isClosed(fr.done) && now.Sub(fr.started) >= floor) || now.Before(fr.started) {
		fr = &floorRun{started: now, done: make(chan struct{})}
		if s.floors == nil {
			s.floors = map[string]*floorRun{}
		}
		s.floors[key] = fr
		s.floorMu.Unlock()
		run, timeout := s.features.Runner, s.features.RunTimeout
		go func() {
			rctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			fr.res, fr.err = run.Run(rctx, probe, tenant)
			close(fr.done)
		}()
	} else {
		cached = true
		fr.joined++
		s.floorMu.Unlock()
	}
	select {
	case <-fr.done:
		return fr.res, cached, fr.err
	case <-ctx.Done():
		return probes.Result{}, cached, ctx.Err()
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// --- connections ------------------------------------------------------------

// connLimiter caps the open connections of a listener. At the cap, a new
// connection closes the one that has waited on its client longest: idle
// between requests, silent since it opened, still sending its request
// headers, trickling a request body, or not reading its answer. Only when
// every connection is busy in a handler (not waiting on its client) is the
// newcomer closed instead. Slow or idle connections therefore cannot lock out a Prometheus
// scrape, and the read timeouts bound the rest.
type connLimiter struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
}

type limitedConn struct {
	net.Conn
	l    *connLimiter
	once sync.Once
	// guarded by l.mu:
	busy    bool      // a handler is serving a request on it
	waiting bool      // that handler waits on the client (body, answer)
	since   time.Time // when it became idle, or its request began
}

func newConnLimiter(l net.Listener, max int) *connLimiter {
	return &connLimiter{Listener: l, max: max, conns: map[*limitedConn]struct{}{}}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitedConn{Conn: c, l: l, since: time.Now()}
		l.mu.Lock()
		var victim *limitedConn
		if len(l.conns) >= l.max {
			for o := range l.conns {
				if (!o.busy || o.waiting) && (victim == nil || o.since.Before(victim.since)) {
					victim = o
				}
			}
			if victim == nil {
				l.mu.Unlock()
				_ = c.Close()
				continue
			}
			delete(l.conns, victim)
		}
		l.conns[lc] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			_ = victim.Conn.Close()
		}
		return lc, nil
	}
}

// open returns the number of connections counted.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (c *limitedConn) set(f func(c *limitedConn)) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	f(c)
}

func asLimited(c net.Conn) *limitedConn {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = nc.NetConn()
	}
	lc, _ := c.(*limitedConn)
	return lc
}

// connState is the http.Server ConnState hook that tells the limiters when
// a connection turns idle or starts a request.
func connState(c net.Conn, st http.ConnState) {
	lc := asLimited(c)
	if lc == nil {
		return
	}
	now := time.Now()
	lc.set(func(lc *limitedConn) {
		switch st {
		case http.StateNew, http.StateIdle:
			lc.busy, lc.waiting, lc.since = false, false, now
		case http.StateActive:
			lc.since = now // the first byte of a request
		case http.StateHijacked:
			lc.busy = true
		}
	})
}

type connKey struct{}

// connContext puts the connection in each request's context (http.Server
// ConnContext), for trackBusy.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if lc := asLimited(c); lc != nil {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// trackBusy marks the connection busy while h serves a request on it,
// except while h waits on the client: reading the request body, or writing
// the answer (which also covers the server discarding an unread body, and a
// client that does not read).
// Each write of an answer must make progress within stall: a client that
// stops reading is cut off then (a run-long handler is not: the deadline is
// set per write, not per request).
func trackBusy(h http.Handler, stall time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lc, _ := r.Context().Value(connKey{}).(*limitedConn)
		if lc == nil {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		lc.set(func(lc *limitedConn) { lc.busy = true })
		defer func() {
			// The deadline must not outlive the request (keep-alive).
			_ = rc.SetWriteDeadline(time.Time{})
			lc.set(func(lc *limitedConn) { lc.busy, lc.waiting = false, false })
		}()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &trackedBody{ReadCloser: r.Body, lc: lc}
		}
		h.ServeHTTP(&trackedWriter{ResponseWriter: w, lc: lc, rc: rc, stall: stall}, r)
	})
}

// waitOnClient runs fn with the connection marked as waiting on its client.
func (c *limitedConn) waitOnClient(fn func()) {
	c.set(func(lc *limitedConn) { lc.waiting = true })
	defer c.set(func(lc *limitedConn) { lc.waiting = false })
	fn()
}

type trackedBody struct {
	io.ReadCloser
	lc *limitedConn
}

func (b *trackedBody) Read(p []byte) (n int, err error) {
	b.lc.waitOnClient(func() { n, err = b.ReadCloser.Read(p) })
	return n, err
}

type trackedWriter struct {
	http.ResponseWriter
	lc    *limitedConn
	rc    *http.ResponseController
	stall time.Duration
}

func (w *trackedWriter) Write(p []byte) (n int, err error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	w.lc.waitOnClient(func() { n, err = w.ResponseWriter.Write(p) })
	return n, err
}

func (w *trackedWriter) WriteHeader(code int) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	w.lc.waitOnClient(func() { w.ResponseWriter.WriteHeader(code) })
}

func (w *trackedWriter) Flush() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	w.lc.waitOnClient(func() { _ = w.rc.Flush() })
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *trackedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// --- logging --------------------------------------------------------------

// clientGone reports whether err only says the client went away (broken
// pipe, reset, timeout, closed): not worth more than a debug line.
func clientGone(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, http.ErrHandlerTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, io.ErrClosedPipe) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return isClientGoneText(err.Error())
}

func isClientGoneText(s string) bool {
	for _, p := range []string{"broken pipe", "connection reset", "i/o timeout", "use of closed network connection", "client disconnected", "TLS handshake error"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// levelWriter is the io.Writer behind the log.Loggers of net/http and
// promhttp: lines about clients that went away go to debug, others to error.
type levelWriter struct{ logger *slog.Logger }

func (w levelWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	if isClientGoneText(msg) {
		w.logger.Debug(msg)
	} else {
		w.logger.Error(msg)
	}
	return len(p), nil
}
