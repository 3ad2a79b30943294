package synlimit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// AppService is an application service the proxy knows by its as_token.
type AppService struct {
	Token string
	// Sender is the AS's own user id (sender_localpart@server).
	Sender string
	// RateLimited is the registration's rate_limited (Synapse's default: true).
	RateLimited bool
}

// Options configure a Proxy.
type Options struct {
	// Upstream is the homeserver's base URL.
	Upstream string
	// Config are the limits; Defaults() when nil.
	Config *Config
	// Now is the clock (time.Now when nil); tests inject one to run long
	// stretches fast.
	Now func() time.Time
	// Pause is how long a refused request is held before the 429 answer
	// (Synapse's Ratelimiter.ratelimit pause, 0.5 s by default;
	// synapse/api/ratelimiting.py, the pause argument of
	// Ratelimiter.ratelimit). Negative: no pause.
	Pause time.Duration
	// Admins are user ids allowed to call the override_ratelimit admin API.
	Admins []string
	// AppServices are the registered application services.
	AppServices []AppService
	// ServerName completes localparts of login identifiers (@user:server).
	ServerName string
}

// Refusal is one 429 the proxy answered.
type Refusal struct {
	Limiter string
	Key     string
	Method  string
	Path    string
	Retry   time.Duration
}

// Proxy is the limiting reverse proxy. Start it with Start.
type Proxy struct {
	URL string

	opts     Options
	cfg      Config
	upstream *url.URL
	rp       *httputil.ReverseProxy
	srv      *httptest.Server
	httpc    *http.Client

	mu        sync.Mutex
	limiters  map[string]*limiter
	overrides map[string]*Settings // user id → override (nil rate: exempt)
	tokens    map[string]string    // access token → user id
	refusals  []Refusal
	counted   map[string]int // actions allowed, by limiter
}

// New builds a proxy without a listener (use Handler or Start).
func New(opts Options) (*Proxy, error) {
	u, err := url.Parse(opts.Upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("synlimit: upstream %q is not a URL", opts.Upstream)
	}
	p := &Proxy{
		opts: opts, upstream: u,
		limiters:  map[string]*limiter{},
		overrides: map[string]*Settings{},
		tokens:    map[string]string{},
		counted:   map[string]int{},
		httpc:     &http.Client{Timeout: 15 * time.Second},
	}
	p.cfg = Defaults()
	if opts.Config != nil {
		p.cfg = *opts.Config
	}
	if p.opts.Now == nil {
		p.opts.Now = time.Now
	}
	if p.opts.Pause == 0 {
		p.opts.Pause = 500 * time.Millisecond
	}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	p.rp.Transport = http.DefaultTransport.(*http.Transport).Clone()
	return p, nil
}

// Start builds a proxy listening on a loopback port.
func Start(opts Options) (*Proxy, error) {
	p, err := New(opts)
	if err != nil {
		return nil, err
	}
	p.srv = httptest.NewServer(p)
	p.URL = p.srv.URL
	return p, nil
}

// Close stops the listener.
func (p *Proxy) Close() {
	if p.srv != nil {
		p.srv.Close()
	}
	p.httpc.CloseIdleConnections()
	if t, ok := p.rp.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// Refusals returns the 429s answered so far.
func (p *Proxy) Refusals() []Refusal {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Refusal(nil), p.refusals...)
}

// Allowed returns how many actions each limiter let through.
func (p *Proxy) Allowed() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.counted {
		out[k] = v
	}
	return out
}

// Override sets a user's rate-limit override, as Synapse's admin API
// POST /_synapse/admin/v1/users/<user_id>/override_ratelimit does: a
// messages_per_second of 0 exempts the user from every limiter keyed by the
// requester (synapse/api/ratelimiting.py, Ratelimiter.can_do_action); other
// values replace rc_message's rate and burst for the user
// (RequestRatelimiter.ratelimit).
func (p *Proxy) Override(userID string, messagesPerSecond float64, burst int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.overrides[userID] = &Settings{messagesPerSecond, burst}
}

// requester is who sent a request (Synapse's Requester, reduced).
type requester struct {
	user        string
	appService  *AppService
	authChecked bool
}

var (
	clientPrefix = regexp.MustCompile(`^/_matrix/client/(?:r0|v3|unstable)`)
	reCreate     = regexp.MustCompile(`^/createRoom$`)
	reInvite     = regexp.MustCompile(`^/rooms/([^/]+)/invite$`)
	reJoinRoom   = regexp.MustCompile(`^/rooms/([^/]+)/join$`)
	reJoinAlias  = regexp.MustCompile(`^/join/([^/]+)$`)
	reMembership = regexp.MustCompile(`^/rooms/([^/]+)/(leave|kick|ban|unban)$`)
	reSend       = regexp.MustCompile(`^/rooms/([^/]+)/(send|state|redact)/`)
	reLogin      = regexp.MustCompile(`^/login$`)
	reOverride   = regexp.MustCompile(`^/_synapse/admin/v1/users/([^/]+)/override_ratelimit$`)
)

// ServeHTTP applies the limiters of the endpoint, then forwards.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m := reOverride.FindStringSubmatch(r.URL.Path); m != nil {
		p.serveOverride(w, r, m[1])
		return
	}
	sub := clientPrefix.ReplaceAllString(r.URL.Path, "")
	if sub == r.URL.Path {
		p.rp.ServeHTTP(w, r)
		return
	}
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	switch {
	case r.Method == http.MethodPost && reLogin.MatchString(sub):
		p.serveLogin(w, r, body)
		return
	case r.Method == http.MethodPost && reCreate.MatchString(sub):
		// synapse/handlers/room.py (RoomCreationHandler.create_room):
		// rc_room_creation checked without update, then the request
		// ratelimiter (rc_message), then rc_room_creation. The events of the
		// new room are sent with ratelimit=False. (Invites listed in the
		// request are rate-limited by
		// RoomMemberHandler.ratelimit_multiple_invites; mxprobe sends none.)
		rq := p.requester(r)
		if p.check(w, r, rq, RcRoomCreation, rq.user, false) &&
			p.message(w, r, rq) &&
			p.check(w, r, rq, RcRoomCreation, rq.user, true) {
			p.rp.ServeHTTP(w, r)
		}
		return
	case r.Method == http.MethodPost && reInvite.MatchString(sub):
		// synapse/handlers/room_member.py
		// (RoomMemberHandler.ratelimit_invite, called from
		// update_membership): rc_invites.per_room keyed by the room,
		// rc_invites.per_user keyed by the invitee (the override checked is
		// the inviter's, as requester), rc_invites.per_issuer keyed by the
		// inviter; then the invite event goes through the request ratelimiter
		// (handlers/message.py,
		// EventCreationHandler.persist_and_notify_client_events).
		rq := p.requester(r)
		room := unescape(reInvite.FindStringSubmatch(sub)[1])
		var req struct {
			UserID string `json:"user_id"`
		}
		_ = json.Unmarshal(body, &req)
		if p.check(w, r, rq, RcInvitesPerRoom, room, true) &&
			p.check(w, r, rq, RcInvitesPerUser, req.UserID, true) &&
			p.check(w, r, rq, RcInvitesPerIssuer, rq.user, true) &&
			p.message(w, r, rq) {
			p.rp.ServeHTTP(w, r)
		}
		return
	case r.Method == http.MethodPost && (reJoinRoom.MatchString(sub) || reJoinAlias.MatchString(sub)):
		// synapse/handlers/room_member.py,
		// RoomMemberHandler.update_membership: a join of a user not yet
		// joined counts rc_joins.local (keyed by the user) and checks
		// rc_joins_per_room (keyed by the room, update=False; the join is
		// recorded when it happens, _on_user_joined_room); the join event
		// goes through the request ratelimiter (handlers/message.py,
		// EventCreationHandler.persist_and_notify_client_events).
		rq := p.requester(r)
		m := reJoinRoom.FindStringSubmatch(sub)
		if m == nil {
			m = reJoinAlias.FindStringSubmatch(sub)
		}
		room := unescape(m[1])
		if !p.alreadyJoined(r, room) {
			if !p.check(w, r, rq, RcJoinsLocal, rq.user, true) ||
				!p.check(w, r, rq, RcJoinsPerRoom, room, false) {
				return
			}
		}
		if !p.message(w, r, rq) {
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		p.rp.ServeHTTP(rec, r)
		if rec.status/100 == 2 {
			p.mu.Lock()
			p.lim(RcJoinsPerRoom).record(room, p.cfg.JoinsPerRoom.PerSecond, p.opts.Now())
			p.mu.Unlock()
		}
		return
	case r.Method == http.MethodPost && reMembership.MatchString(sub),
		r.Method == http.MethodPut && reSend.MatchString(sub),
		r.Method == http.MethodPost && reSend.MatchString(sub):
		// Every event a user creates — messages, state, leave/kick/ban — goes
		// through the request ratelimiter, rc_message keyed by the user
		// (synapse/handlers/message.py, EventCreationHandler's
		// create_and_send_nonmember_event and
		// persist_and_notify_client_events, api/ratelimiting.py
		// RequestRatelimiter). Forget creates no event and is not limited.
		rq := p.requester(r)
		if p.message(w, r, rq) {
			p.rp.ServeHTTP(w, r)
		}
		return
	}
	p.rp.ServeHTTP(w, r)
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// message is RequestRatelimiter.ratelimit (synapse/api/ratelimiting.py): the
// AS sender itself is never limited; a user override with a zero rate
// exempts, another replaces rc_message's rate and burst; then
// Ratelimiter.ratelimit keyed by the user.
func (p *Proxy) message(w http.ResponseWriter, r *http.Request, rq requester) bool {
	if rq.user == "" {
		return true // unauthenticated: the homeserver refuses it
	}
	for _, as := range p.opts.AppServices {
		if as.Sender == rq.user {
			return true
		}
	}
	s := p.cfg.Message
	p.mu.Lock()
	if o := p.overrides[rq.user]; o != nil {
		if o.PerSecond == 0 {
			p.mu.Unlock()
			return true
		}
		s = *o
	}
	p.mu.Unlock()
	return p.checkWith(w, r, rq, RcMessage, rq.user, s, true)
}

// check applies limiter name with its configured settings.
func (p *Proxy) check(w http.ResponseWriter, r *http.Request, rq requester, name, key string, update bool) bool {
	return p.checkWith(w, r, rq, name, key, p.cfg.settings(name), update)
}

// checkWith is Ratelimiter.ratelimit (synapse/api/ratelimiting.py): the
// exemptions of can_do_action (an application service registered with
// rate_limited: false; a requester whose override has a zero
// messages_per_second), the bucket, and on refusal a LimitExceededError: 429
// M_LIMIT_EXCEEDED with retry_after_ms and a Retry-After header in seconds,
// rounded up (synapse/api/errors.py, LimitExceededError).
func (p *Proxy) checkWith(w http.ResponseWriter, r *http.Request, rq requester, name, key string, s Settings, update bool) bool {
	if rq.appService != nil && !rq.appService.RateLimited {
		return true
	}
	now := p.opts.Now()
	p.mu.Lock()
	if rq.user != "" {
		if o := p.overrides[rq.user]; o != nil && o.PerSecond == 0 {
			p.mu.Unlock()
			return true
		}
	}
	ok, retry := p.lim(name).canDo(key, s.PerSecond, s.Burst, update, now)
	if ok {
		if update {
			p.counted[name]++
		}
		p.mu.Unlock()
		return true
	}
	p.refusals = append(p.refusals, Refusal{Limiter: name, Key: key, Method: r.Method, Path: r.URL.Path, Retry: retry})
	p.mu.Unlock()
	if p.opts.Pause > 0 {
		t := time.NewTimer(p.opts.Pause)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	ms := retry.Milliseconds()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", fmt.Sprint(int64(math.Ceil(float64(ms)/1000))))
	w.WriteHeader(http.StatusTooManyRequests)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests", "retry_after_ms": ms,
	})
	return false
}

func (p *Proxy) lim(name string) *limiter {
	l := p.limiters[name]
	if l == nil {
		l = &limiter{name: name, actions: map[string]entry{}}
		p.limiters[name] = l
	}
	return l
}

// serveLogin applies the /login limiters (synapse/rest/client/login.py):
// rc_login.address keyed by the client's IP address for every login type
// (LoginRestServlet.on_POST), except an application service's
// m.login.application_service when the AS is registered with rate_limited:
// false; the account limiter rc_login.account, keyed by the user id, on a
// login whose credentials were accepted (_complete_login); and
// rc_login.failed_attempts keyed by the user id, counting refused passwords
// (synapse/handlers/auth.py, _check_password and validate_login). The proxy
// checks the account limiters before forwarding and records them from the
// homeserver's answer.
func (p *Proxy) serveLogin(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Type       string `json:"type"`
		User       string `json:"user"`
		Identifier struct {
			Type string `json:"type"`
			User string `json:"user"`
		} `json:"identifier"`
	}
	_ = json.Unmarshal(body, &req)
	none := requester{}
	exempt := false
	if req.Type == "m.login.application_service" {
		rq := p.requester(r)
		exempt = rq.appService != nil && !rq.appService.RateLimited
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if !exempt && !p.check(w, r, none, RcLoginAddress, host, true) {
		return
	}
	user := req.Identifier.User
	if user == "" {
		user = req.User
	}
	if user != "" && !strings.HasPrefix(user, "@") && p.opts.ServerName != "" {
		user = "@" + user + ":" + p.opts.ServerName
	}
	user = strings.ToLower(user)
	password := req.Type == "m.login.password"
	if user != "" && password && !exempt {
		if !p.check(w, r, none, RcLoginFailed, user, false) || !p.check(w, r, none, RcLoginAccount, user, false) {
			return
		}
	}
	rec := &statusRecorder{ResponseWriter: w, keep: true}
	p.rp.ServeHTTP(rec, r)
	if rec.status/100 == 2 {
		var resp struct {
			UserID      string `json:"user_id"`
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(rec.body.Bytes(), &resp) == nil && resp.AccessToken != "" {
			p.mu.Lock()
			p.tokens[resp.AccessToken] = resp.UserID
			if !exempt {
				key := user
				if key == "" {
					key = strings.ToLower(resp.UserID)
				}
				p.lim(RcLoginAccount).record(key, p.cfg.LoginAccount.PerSecond, p.opts.Now())
			}
			p.mu.Unlock()
		}
	} else if rec.status == http.StatusForbidden && user != "" && password && !exempt {
		p.mu.Lock()
		p.lim(RcLoginFailed).record(user, p.cfg.LoginFailed.PerSecond, p.opts.Now())
		p.mu.Unlock()
	}
}

// requester resolves the access token of r to a user (cached; a token never
// seen is asked of the homeserver with /account/whoami).
func (p *Proxy) requester(r *http.Request) requester {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok == "" {
		tok = r.URL.Query().Get("access_token")
	}
	if tok == "" {
		return requester{}
	}
	for i := range p.opts.AppServices {
		as := &p.opts.AppServices[i]
		if as.Token == tok {
			user := r.URL.Query().Get("user_id")
			if user == "" {
				user = as.Sender
			}
			return requester{user: user, appService: as}
		}
	}
	p.mu.Lock()
	user, ok := p.tokens[tok]
	p.mu.Unlock()
	if ok {
		return requester{user: user}
	}
	user = p.whoami(r.Context(), tok)
	if user != "" {
		p.mu.Lock()
		p.tokens[tok] = user
		p.mu.Unlock()
	}
	return requester{user: user}
}

func (p *Proxy) whoami(ctx context.Context, tok string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.upstream.String()+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := p.httpc.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var out struct {
		UserID string `json:"user_id"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return ""
	}
	return out.UserID
}

// alreadyJoined asks the homeserver whether the requester is joined to room
// already (Synapse only counts joins of users not yet joined, room_member.py,
// RoomMemberHandler.update_membership): joined_members answers only to
// members.
func (p *Proxy) alreadyJoined(r *http.Request, room string) bool {
	if !strings.HasPrefix(room, "!") {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		p.upstream.String()+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil)
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	resp, err := p.httpc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var out struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		return false
	}
	rq := p.requester(r)
	_, ok := out.Joined[rq.user]
	return ok
}

// serveOverride is Synapse's admin API
// POST/DELETE /_synapse/admin/v1/users/<user_id>/override_ratelimit
// (synapse/rest/admin/users.py, RateLimitRestServlet), for the users in
// Options.Admins.
func (p *Proxy) serveOverride(w http.ResponseWriter, r *http.Request, user string) {
	user = unescape(user)
	rq := p.requester(r)
	admin := false
	for _, a := range p.opts.Admins {
		if a == rq.user {
			admin = true
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !admin {
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN","error":"You are not a server admin"}`)
		return
	}
	switch r.Method {
	case http.MethodPost:
		var req struct {
			MessagesPerSecond float64 `json:"messages_per_second"`
			BurstCount        int     `json:"burst_count"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req)
		p.Override(user, req.MessagesPerSecond, req.BurstCount)
		_ = json.NewEncoder(w).Encode(map[string]any{"messages_per_second": req.MessagesPerSecond, "burst_count": req.BurstCount})
	case http.MethodDelete:
		p.mu.Lock()
		delete(p.overrides, user)
		p.mu.Unlock()
		_, _ = io.WriteString(w, "{}")
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"method not allowed"}`)
	}
}

// statusRecorder passes an answer through and remembers its status (and,
// with keep, its body).
type statusRecorder struct {
	http.ResponseWriter
	status int
	keep   bool
	body   bytes.Buffer
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.keep && s.body.Len() < 1<<20 {
		s.body.Write(b)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
