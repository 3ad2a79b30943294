package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

// Runner runs probes on demand. *probes.Engine implements it: Run respects
// the concurrency limit and joins a run already in flight for the same probe
// and tenant; Lookup reports probes.ErrUnknownProbe / ErrUnknownTenant.
type Runner interface {
	Run(ctx context.Context, probe, tenant string) (probes.Result, error)
	Lookup(probe, tenant string) (*probes.Job, error)
	Jobs() []*probes.Job
}

// Results is the run history; *history.Store implements it.
type Results interface {
	Entries() []history.Entry
	Latest() []probes.Result
}

// Settings are the web settings in force, read at request time so a reload
// applies at once.
type Settings struct {
	// Token is the API token; "" leaves the mutating endpoints, /probe and
	// /-/reload open.
	Token string
	// ProtectReads makes reads (API, the page, /metrics) need the token too.
	ProtectReads bool
	// MetricsToken is a second credential, accepted on /metrics only, for
	// Prometheus when ProtectReads is on.
	MetricsToken string
	// ProbeAnonymous names the modules /probe runs without the token.
	ProbeAnonymous []string
	// RunFloor is the least time between fresh runs of one probe and tenant
	// started over HTTP (default DefaultRunFloor).
	RunFloor time.Duration
	// CookieSecure forces the session cookie's Secure flag on (true) or off
	// (false); nil sets it when the request came over TLS (directly or, per
	// X-Forwarded-Proto, through a trusted proxy).
	CookieSecure *bool
	// TrustedProxies may set X-Forwarded-For and X-Forwarded-Proto.
	TrustedProxies []netip.Prefix
	// Title heads the status page.
	Title string
	// SparklineRuns is how many runs the sparkline shows.
	SparklineRuns int
	// Refresh reloads the page in the browser (0: never).
	Refresh time.Duration
	// TenantNames are display names by tenant id.
	TenantNames map[string]string
}

// Features are the parts the API, /probe and the status page run on.
type Features struct {
	Runner   Runner
	Results  Results
	Settings func() Settings
	// RunTimeout bounds how long a run-now request waits (default 5 minutes;
	// the probe's own timeout normally ends it first).
	RunTimeout time.Duration
	// Now is the clock of the page (tests); default time.Now.
	Now func() time.Time
}

// Enable adds the API (/api/v1/...), /probe and the status page (/) to the
// server. Call it once, before serving.
func (s *Server) Enable(f Features) {
	if f.Settings == nil {
		f.Settings = func() Settings { return Settings{} }
	}
	if f.RunTimeout <= 0 {
		f.RunTimeout = 5 * time.Minute
	}
	if f.Now == nil {
		f.Now = time.Now
	}
	s.mu.Lock()
	s.features = f
	s.enabled = true
	if s.sessionKey == nil {
		s.sessionKey = make([]byte, 32)
		_, _ = rand.Read(s.sessionKey)
	}
	s.mu.Unlock()
	s.registerAPI()
	s.registerProbe()
	s.registerStatus()
}

func (s *Server) settings() Settings {
	st := Settings{}
	if s.features.Settings != nil {
		st = s.features.Settings()
	}
	if st.Title == "" {
		st.Title = "mxprobe"
	}
	if st.SparklineRuns <= 0 {
		st.SparklineRuns = 30
	}
	return st
}

// tokenEqual compares in constant time (over digests, so the length of the
// token does not leak either).
func tokenEqual(given, want string) bool {
	if want == "" || given == "" {
		return false
	}
	a := sha256.Sum256([]byte(given))
	b := sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// requestToken is the API token a request carries: "Authorization: Bearer"
// or, behind the web config's basic auth (which takes the Authorization
// header), "X-Mxprobe-Token".
func requestToken(r *http.Request) string {
	if t := r.Header.Get("X-Mxprobe-Token"); t != "" {
		return t
	}
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// access is what a request needs.
type access int

const (
	accessRead    access = iota // API reads, the page: open unless ProtectReads
	accessWrite                 // changes, run-now, /-/reload: the token
	accessMetrics               // /metrics: like a read, the metrics token also works
)

// allow decides whether r may go on with need; when not, it has answered
// (401, or 429 for an address locked out after wrong tokens).
func (s *Server) allow(w http.ResponseWriter, r *http.Request, st Settings, need access) bool {
	if st.Token == "" || (need != accessWrite && !st.ProtectReads) {
		return true
	}
	ok, wait := s.checkToken(r, st, need)
	switch {
	case ok:
		return true
	case wait > 0:
		tooMany(w, wait)
	case need == accessMetrics:
		w.Header().Set("WWW-Authenticate", `Bearer realm="mxprobe"`)
		http.Error(w, "this endpoint needs web.metrics_token or web.api_token (Authorization: Bearer, or X-Mxprobe-Token behind basic auth)", http.StatusUnauthorized)
	default:
		unauthorized(w, need == accessWrite)
	}
	return false
}

// checkToken checks the request's token (and, for reads, the session)
// against the settings, counting wrong tokens per client address. wait > 0:
// the address is locked out for that long and the token was not even looked
// at. Every place that compares a request's token goes through here, so
// none is an unthrottled oracle.
func (s *Server) checkToken(r *http.Request, st Settings, need access) (ok bool, wait time.Duration) {
	tok := requestToken(r)
	if tok == "" || st.Token == "" {
		return need != accessWrite && s.validSession(r, st), 0
	}
	addr := clientAddr(r, st.TrustedProxies)
	now := s.features.Now()
	if wait := s.throttle.wait(addr, now); wait > 0 {
		return false, wait
	}
	if tokenEqual(tok, st.Token) || (need == accessMetrics && tokenEqual(tok, st.MetricsToken)) {
		s.throttle.ok(addr)
		return true, 0
	}
	s.throttle.fail(addr, now)
	return false, 0
}

// anonymousProbe reports whether /probe may run module without the token.
func anonymousProbe(st Settings, module string) bool {
	return slices.Contains(st.ProbeAnonymous, module)
}

const (
	sessionCookie = "mxprobe_session"
	sessionTTL    = 12 * time.Hour
)

func (s *Server) mac(parts ...string) string {
	m := hmac.New(sha256.New, s.sessionKey)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// tokenID ties sessions to the token in force: a new token (reload) ends
// every session made with the old one.
func tokenID(token string) string {
	h := sha256.Sum256([]byte("mxprobe-session\x00" + token))
	return base64.RawURLEncoding.EncodeToString(h[:8])
}

// newSession starts a server-side session and returns its cookie value.
func (s *Server) newSession(st Settings) string {
	return s.sessions.create(tokenID(st.Token), s.features.Now())
}

func (s *Server) session(r *http.Request, st Settings) (string, bool) {
	if st.Token == "" {
		return "", false
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", false
	}
	if !s.sessions.valid(c.Value, tokenID(st.Token), s.features.Now()) {
		return "", false
	}
	return c.Value, true
}

func (s *Server) validSession(r *http.Request, st Settings) bool {
	_, ok := s.session(r, st)
	return ok
}

// csrfToken is bound to the session, so a page from another origin cannot
// know it.
func (s *Server) csrfToken(session string) string { return s.mac("csrf", session) }

func (s *Server) csrfOK(r *http.Request, st Settings) bool {
	sess, ok := s.session(r, st)
	if !ok {
		return false
	}
	want := s.csrfToken(sess)
	return hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(want))
}

// cookieSecure decides the session cookie's Secure flag.
func cookieSecure(r *http.Request, st Settings) bool {
	if st.CookieSecure != nil {
		return *st.CookieSecure
	}
	return secureRequest(r, st.TrustedProxies)
}
