package masemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// --- the upstream provider: OpenMeet's platform API and OIDC provider -------
//
// It follows OpenMeet-Team/openmeet-api at fb9df08 (paths relative to that
// repository): the email login and logout of src/auth/auth.controller.ts,
// the sessions of src/auth/auth.service.ts and src/session, the OIDC
// endpoints of src/oidc/oidc.controller.ts and src/oidc/services/oidc.service.ts,
// and the throttler of src/app.module.ts. Options.ProviderPasswordForm swaps
// in a generic provider with an email and password form of its own (not
// OpenMeet) for the form adapter.

// OpenMeet's limits and lifetimes.
const (
	// platformTokenTTL: the bearer token of the email login is a 15 min
	// HS256 JWT (AUTH_JWT_TOKEN_EXPIRES_IN in the env examples).
	platformTokenTTL = 15 * time.Minute
	// sessionCookieMaxAge: oidc_session and oidc_tenant live 24 h
	// (src/utils/cookie-config.ts, getOidcCookieOptions).
	sessionCookieMaxAge = 86400
	// upCodeTTL: the provider's codes are 60 s JWTs, single use
	// (src/oidc/services/oidc.service.ts, OidcService.generateAuthCode and
	// validateAuthCode).
	upCodeTTL = 60 * time.Second
	// TokenLimit and TokenLimitWindow are @Throttle({default: {limit: 10,
	// ttl: 60000}}) on POST /api/oidc/token in production (1000 otherwise)
	// (src/oidc/oidc.controller.ts, OidcController.token). The block lasts ttl
	// (@nestjs/throttler v6.4.0: blockDuration defaults to ttl).
	TokenLimit       = 10
	TokenLimitWindow = time.Minute
)

// PlatformFrontend is where the provider's email form hands a known user
// over to (the tenant's web app, frontendDomain of TENANTS_B64; the
// platform's env example uses http://localhost:9005). The emulator serves
// nothing there.
const PlatformFrontend = "http://localhost:9005"

type upUser struct {
	tenant, email, password, slug, name string
	// handle is a handle from the platform's handle registry ("": none).
	handle string
	// claim overrides preferred_username (a deviation for MAS's tests: ""
	// sends none) when claimSet.
	claim    string
	claimSet bool
}

// preferredUsername is the provider's preferred_username claim: the user's
// registered handle, else "<lower(slug)>_<lower(tenantId)>"
// (src/oidc/services/oidc.service.ts, OidcService.mapUserToOidcClaims).
func (u *upUser) preferredUsername() string {
	switch {
	case u.claimSet:
		return u.claim
	case u.handle != "":
		return u.handle
	}
	return strings.ToLower(u.slug) + "_" + strings.ToLower(u.tenant)
}

// platSession is a platform session: every email login creates one
// (src/auth/auth.service.ts, AuthService.validateLogin); logout deletes it
// (auth.controller.ts AuthController.logout, auth.service.ts logout).
type platSession struct {
	id      string // the session's secureId, the oidc_session cookie
	user    *upUser
	token   string // the bearer token of the login answer
	expires time.Time
	created time.Time
	ended   bool
}

type upCode struct {
	code, redirectURI, clientID, nonce string
	user                               *upUser
	issued                             time.Time
}

// upClaims are the ID token claims MAS reads from the provider.
type upClaims struct {
	Sub               string `json:"sub"`
	Email             string `json:"email"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username,omitempty"`
	TenantID          string `json:"tenant_id"`
	Nonce             string `json:"nonce,omitempty"`
}

// provider is the platform's state (guarded by Emulator.mu).
type provider struct {
	users    map[string]*upUser // by tenant|email
	sessions map[string]*platSession
	byToken  map[string]*platSession
	codes    map[string]*upCode
	throttle throttle
	// client is MAS's HTTP client towards the provider's token endpoint.
	client *http.Client
}

func newProvider(limit int) provider {
	if limit <= 0 {
		limit = TokenLimit
	}
	return provider{users: map[string]*upUser{}, sessions: map[string]*platSession{},
		byToken: map[string]*platSession{}, codes: map[string]*upCode{},
		throttle: throttle{limit: limit, ttl: TokenLimitWindow, block: TokenLimitWindow, keys: map[string]*throttleKey{}},
		client:   &http.Client{Transport: &http.Transport{}, Timeout: 15 * time.Second}}
}

// throttle is @nestjs/throttler v6.4.0's in-memory storage
// (ThrottlerStorageService.increment): every hit expires on its own after
// ttl (a sliding window); a key whose hits exceed the limit is blocked for
// block, and hits are not counted while blocked.
type throttle struct {
	limit      int
	ttl, block time.Duration
	keys       map[string]*throttleKey
}

type throttleKey struct {
	hits         []time.Time
	blocked      bool
	blockExpires time.Time
}

// increment counts one hit of key and reports whether the key is blocked.
func (t *throttle) increment(key string, now time.Time) bool {
	k := t.keys[key]
	if k == nil {
		k = &throttleKey{}
		t.keys[key] = k
	}
	keep := k.hits[:0]
	for _, h := range k.hits {
		if now.Sub(h) < t.ttl {
			keep = append(keep, h)
		}
	}
	k.hits = keep
	if !k.blocked {
		k.hits = append(k.hits, now)
	}
	if len(k.hits) > t.limit && !k.blocked {
		k.blocked, k.blockExpires = true, now.Add(t.block)
	}
	if k.blocked && !now.Before(k.blockExpires) {
		k.hits = append(k.hits, now)
		k.blocked = false
	}
	return k.blocked
}

func (e *Emulator) upstreamHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/auth/email/login", e.upEmailLogin)
	mux.HandleFunc("POST /api/v1/auth/logout", e.upLogout)
	mux.HandleFunc("GET /api/oidc/auth", e.upAuth)
	mux.HandleFunc("GET /api/oidc/login", e.upEmailForm)
	mux.HandleFunc("POST /api/oidc/login", e.upEmailFormSubmit)
	mux.HandleFunc("POST /api/oidc/token", e.upToken)
	return mux
}

// upEmailLogin is POST /api/v1/auth/email/login (auth.controller.ts,
// AuthController.login): the tenant from x-tenant-id, the email lower-cased
// by the DTO, 422 for an unknown email or a wrong password; a session is
// created and the answer is {refreshToken, token, tokenExpires, user,
// sessionId} with the cookies oidc_session=<sessionId> and
// oidc_tenant=<tenant>.
func (e *Emulator) upEmailLogin(w http.ResponseWriter, r *http.Request) {
	tenant := r.Header.Get("x-tenant-id")
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil || tenant == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "errors": map[string]string{"request": "tenant header and JSON body required"}})
		return
	}
	e.mu.Lock()
	u := e.om.users[tenant+"|"+strings.ToLower(body.Email)]
	e.mu.Unlock()
	if u == nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"status": 422, "errors": map[string]string{"email": "notFound"}})
		return
	}
	if u.password != body.Password {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"status": 422, "errors": map[string]string{"password": "incorrectPassword"}})
		return
	}
	s := e.upStartSession(w, r, u)
	writeJSON(w, http.StatusOK, map[string]any{
		"refreshToken": random("eyJhbGciOiJIUzI1NiJ9.r"),
		"token":        s.token,
		"tokenExpires": s.expires.UnixMilli(),
		"user":         map[string]any{"slug": u.slug, "email": u.email, "firstName": u.name},
		"sessionId":    s.id,
	})
}

// upStartSession creates a platform session and sets its cookies:
// Max-Age=86400; Path=/; HttpOnly; SameSite=Lax, Domain only for a named
// host that is not localhost, Secure only over https
// (src/utils/cookie-config.ts, getOidcCookieOptions).
func (e *Emulator) upStartSession(w http.ResponseWriter, r *http.Request, u *upUser) *platSession {
	now := e.now()
	s := &platSession{id: uuid(), user: u, token: random("eyJhbGciOiJIUzI1NiJ9."), created: now, expires: now.Add(platformTokenTTL)}
	e.mu.Lock()
	e.om.sessions[s.id] = s
	e.om.byToken[s.token] = s
	e.stats.UpstreamLogins++
	e.mu.Unlock()
	domain := ""
	if host, _, err := net.SplitHostPort(r.Host); err == nil && host != "localhost" && net.ParseIP(host) == nil {
		if labels := strings.Split(host, "."); len(labels) >= 2 {
			domain = "." + strings.Join(labels[len(labels)-2:], ".")
		}
	}
	for _, c := range [][2]string{{"oidc_session", s.id}, {"oidc_tenant", u.tenant}} {
		http.SetCookie(w, &http.Cookie{Name: c[0], Value: c[1], Path: "/", Domain: domain, MaxAge: sessionCookieMaxAge,
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil})
	}
	return s
}

// upLogout is POST /api/v1/auth/logout (auth.controller.ts,
// AuthController.logout): the JWT guard needs the bearer token of the login
// answer, unexpired, and the tenant (x-tenant-id) of its session; the session
// is deleted, 204. The cookies are not cleared (they just stop naming a
// session).
func (e *Emulator) upLogout(w http.ResponseWriter, r *http.Request) {
	tenant := r.Header.Get("x-tenant-id")
	e.mu.Lock()
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s := e.om.byToken[tok]
	ok := s != nil && !s.ended && tenant == s.user.tenant && e.now().Before(s.expires)
	if ok {
		s.ended = true
		delete(e.om.byToken, s.token)
		e.stats.PlatformLogouts++
	}
	e.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"statusCode": 401, "message": "Unauthorized"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// upAuth is GET /api/oidc/auth (oidc.controller.ts, OidcController.authorize).
// The user is the one of the oidc_session + oidc_tenant cookies when that
// session is live in that tenant (sessionService.findBySecureId); a
// login_hint other than the user's email, compared exactly, drops the user
// (the login_hint validation). Without a user, prompt=none is answered
// login_required (returnPromptNoneError; MAS's client id and a Go user agent
// are not a "Matrix app"), and anything else goes to the email-only form at
// /api/oidc/login (the last-resort redirect). With prompt=none and max_age a
// session older than max_age counts as none (isSessionValidForMaxAge). A
// user gets a code.
func (e *Emulator) upAuth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ru := q.Get("redirect_uri")
	n := 0
	for i := 1; i <= e.opts.Providers; i++ {
		if q.Get("client_id") == upstreamClientID(i) && ru == e.callbackURL(i) {
			n = i
		}
	}
	mode := q.Get("response_mode")
	if n == 0 || q.Get("response_type") != "code" || !strings.Contains(" "+q.Get("scope")+" ", " openid ") ||
		(mode != "" && mode != ResponseModeQuery && mode != ResponseModeFormPost) {
		errorPage(w, http.StatusBadRequest, "Invalid authorization request", "Unknown client, redirect_uri, response_type, response_mode or scope.")
		return
	}
	answer := func(v url.Values) {
		v.Set("state", q.Get("state"))
		if mode == ResponseModeFormPost {
			var p []field
			for k, vs := range v {
				for _, x := range vs {
					p = append(p, field{Name: k, Value: x})
				}
			}
			renderMAS(w, http.StatusOK, "form_post", formPostView{Action: ru, Params: p})
			return
		}
		redirect(w, http.StatusFound, withQuery(ru, v))
	}
	e.mu.Lock()
	var u *upUser
	var sess *platSession
	if s := e.om.sessions[cookie(r, "oidc_session")]; s != nil && !s.ended && s.user.tenant == cookie(r, "oidc_tenant") {
		u, sess = s.user, s
	}
	if e.faults.UpstreamSessionExpired {
		u = nil
	}
	e.mu.Unlock()
	if hint := q.Get("login_hint"); u != nil && hint != "" && hint != u.email {
		u = nil
	}
	if q.Get("prompt") == "none" {
		if u != nil && q.Get("max_age") != "" {
			if max, err := strconv.Atoi(q.Get("max_age")); err == nil && e.now().Sub(sess.created) > time.Duration(max)*time.Second {
				u = nil
			}
		}
		if u == nil {
			answer(url.Values{"error": {"login_required"}})
			return
		}
	}
	if u == nil {
		if e.opts.ProviderPasswordForm {
			e.renderPasswordForm(w, r, r.URL.RawQuery, "")
			return
		}
		v := url.Values{}
		for _, k := range []string{"client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "login_hint"} {
			if x := q.Get(k); x != "" {
				v.Set(k, x)
			}
		}
		redirect(w, http.StatusFound, "/api/oidc/login?"+v.Encode())
		return
	}
	c := &upCode{code: random(""), redirectURI: ru, clientID: q.Get("client_id"), nonce: q.Get("nonce"), user: u, issued: e.now()}
	e.mu.Lock()
	e.om.codes[c.code] = c
	e.mu.Unlock()
	answer(url.Values{"code": {c.code}})
}

// upEmailForm is GET /api/oidc/login (oidc.controller.ts,
// OidcController.showLoginForm and the form HTML it sends): a form with an
// email input only (login_hint pre-filled) and the authorization parameters
// as hidden inputs. With Options.ProviderPasswordForm it is the generic
// provider's password form.
func (e *Emulator) upEmailForm(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var hidden []field
	for _, k := range []string{"client_id", "redirect_uri", "response_type", "scope", "state", "nonce"} {
		hidden = append(hidden, field{Name: k, Value: q.Get(k)})
	}
	renderEmailForm(w, hidden, q.Get("login_hint"), "")
}

func renderEmailForm(w http.ResponseWriter, hidden []field, email, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	var b strings.Builder
	_ = emailFormTmpl.Execute(&b, struct {
		Hidden       []field
		Email, Error string
	}{hidden, email, msg})
	_, _ = io.WriteString(w, b.String())
}

// upEmailFormSubmit is POST /api/oidc/login (oidc.controller.ts,
// OidcController.handleEmailLogin): an unknown email gets a page saying so; a
// known one is handed over to the tenant's web app, which logs the user in
// (there is no password form at the provider).
func (e *Emulator) upEmailFormSubmit(w http.ResponseWriter, r *http.Request) {
	if e.opts.ProviderPasswordForm {
		e.upFormLogin(w, r)
		return
	}
	email := r.PostFormValue("email")
	if email == "" || r.PostFormValue("client_id") == "" || r.PostFormValue("redirect_uri") == "" {
		errorPage(w, http.StatusBadRequest, "Bad request", "Missing required parameters.")
		return
	}
	var u *upUser
	e.mu.Lock()
	for _, x := range e.om.users {
		if x.email == strings.ToLower(email) {
			u = x
		}
	}
	e.mu.Unlock()
	if u == nil {
		errorPage(w, http.StatusOK, "Account not found", "We couldn't find an account with that email address.")
		return
	}
	v := url.Values{"email": {email}, "oidc_flow": {"true"}, "tenantId": {u.tenant}}
	for _, k := range []string{"client_id", "redirect_uri", "response_type", "scope", "state", "nonce"} {
		v.Set("oidc_"+k, r.PostFormValue(k))
	}
	redirect(w, http.StatusFound, PlatformFrontend+"/auth/login?"+v.Encode())
}

// renderPasswordForm is the generic provider's login form (ProviderPasswordForm).
func (e *Emulator) renderPasswordForm(w http.ResponseWriter, r *http.Request, ret, msg string) {
	renderPage(w, http.StatusOK, page{Title: "Sign in", Message: msg, Form: true, Button: "Sign in", Action: "/api/oidc/login",
		Hidden: []field{{Name: "csrf", Value: csrfToken(w, r, "oidc_csrf")}, {Name: "return", Value: ret}},
		Text:   []field{{Name: "email", Label: "Email", Type: "email"}, {Name: "password", Label: "Password", Type: "password"}}})
}

// upFormLogin is the generic provider's password form submission.
func (e *Emulator) upFormLogin(w http.ResponseWriter, r *http.Request) {
	if c := cookie(r, "oidc_csrf"); c == "" || r.PostFormValue("csrf") != c {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "")
		return
	}
	email := strings.ToLower(r.PostFormValue("email"))
	var u *upUser
	e.mu.Lock()
	for _, x := range e.om.users {
		if x.email == email && x.password == r.PostFormValue("password") {
			u = x
		}
	}
	e.mu.Unlock()
	ret := r.PostFormValue("return")
	if u == nil {
		e.renderPasswordForm(w, r, ret, "Wrong email or password.")
		return
	}
	e.upStartSession(w, r, u)
	redirect(w, http.StatusFound, "/api/oidc/auth?"+ret)
}

// upToken is POST /api/oidc/token (oidc.controller.ts, OidcController.token).
// Its @Throttle limit of 10 per 60 s, keyed by the caller's address (MAS's,
// for every code exchange), is counted twice per request: the global
// ThrottlerGuard (src/app.module.ts: MultiLayerThrottlerGuard, AppModule's
// APP_GUARD) and the route's own @UseGuards(ThrottlerGuard) increment the
// same key in the same store. So the 6th request in any sliding minute is
// answered 429 and the address is blocked for 60 s. A code is burnt before
// the client and redirect URI are checked; codes live 60 s.
func (e *Emulator) upToken(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	e.mu.Lock()
	e.stats.ProviderTokenRequests++
	now := e.now()
	blocked := e.om.throttle.increment(host, now) || e.om.throttle.increment(host, now)
	if blocked {
		e.stats.ProviderTokenRateLimited++
	}
	e.mu.Unlock()
	if blocked {
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"statusCode": 429, "message": "ThrottlerException: Too Many Requests"})
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "authorization_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	e.mu.Lock()
	c := e.om.codes[r.PostForm.Get("code")]
	delete(e.om.codes, r.PostForm.Get("code"))
	e.mu.Unlock()
	if c == nil || c.redirectURI != r.PostForm.Get("redirect_uri") || c.clientID != r.PostForm.Get("client_id") ||
		now.Sub(c.issued) > upCodeTTL {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid or expired authorization code")
		return
	}
	e.mu.Lock()
	claims := e.claimsOf(c.user)
	e.mu.Unlock()
	claims.Nonce = c.nonce
	writeJSON(w, http.StatusOK, map[string]any{"access_token": random("eyJhbGciOiJSUzI1NiJ9.a"), "token_type": "Bearer",
		"expires_in": 3600, "id_token": idToken(claims)})
}

// claimsOf is the provider's claims of a user (oidc.service.ts,
// OidcService.mapUserToOidcClaims): sub is the slug (mu held).
func (e *Emulator) claimsOf(u *upUser) upClaims {
	return upClaims{Sub: u.slug, Email: u.email, Name: u.name, PreferredUsername: u.preferredUsername(), TenantID: u.tenant}
}

// idToken encodes claims as an (unsigned) JWT; MAS's side of the emulator
// reads its payload.
func idToken(c upClaims) string {
	b, _ := json.Marshal(c)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString(b) + ".c2ln"
}

// errUpstreamToken is the provider's token endpoint refusing MAS's exchange.
type errUpstreamToken struct{ status int }

func (e errUpstreamToken) Error() string { return fmt.Sprintf("HTTP %d", e.status) }

// exchangeUpstream is MAS exchanging the provider's code at its token
// endpoint (server to server, from MAS's address).
func (e *Emulator) exchangeUpstream(ctx context.Context, n int, code string) (upClaims, error) {
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {e.callbackURL(n)},
		"client_id": {upstreamClientID(n)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.UpstreamURL+"/api/oidc/token", bytes.NewBufferString(form.Encode()))
	if err != nil {
		return upClaims{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := e.om.client.Do(req)
	if err != nil {
		return upClaims{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return upClaims{}, errUpstreamToken{resp.StatusCode}
	}
	var out struct {
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&out); err != nil {
		return upClaims{}, err
	}
	parts := strings.Split(out.IDToken, ".")
	if len(parts) != 3 {
		return upClaims{}, fmt.Errorf("id_token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return upClaims{}, err
	}
	var c upClaims
	return c, json.Unmarshal(payload, &c)
}

// OpenMeetOptions are MAS's settings in OpenMeet's deployment (openmeet-api
// matrix-config/mas-config.gomplate.yaml: upstream_oauth2, branding,
// passwords): password login off, login_hint forwarded, prompt=none and
// max_age=3600 sent upstream, the localpart imported as required, display
// name and email suggested, a terms-of-service link (the terms box).
func OpenMeetOptions() Options {
	return Options{PasswordsDisabled: true, ForwardLoginHint: true,
		AdditionalAuthorizationParameters: map[string]string{"prompt": "none", "max_age": "3600"},
		LocalpartImport:                   ImportRequire, DisplayNameImport: ImportSuggest, EmailImport: ImportSuggest}
}

// --- test controls of the platform ----------------------------------------

// AddUpstreamUser creates a bot account at the platform: tenant, email and
// password for the email login, and its slug. The provider's
// preferred_username is "<lower(slug)>_<lower(tenant)>" unless a handle is
// registered (SetUpstreamHandle).
func (e *Emulator) AddUpstreamUser(tenant, email, password, slug string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.om.users[tenant+"|"+strings.ToLower(email)] = &upUser{tenant: tenant, email: strings.ToLower(email), password: password,
		slug: slug, name: "Bot of " + tenant}
}

// UpstreamLocalpart is the Matrix localpart the provider makes for a user
// without a handle: "<lower(slug)>_<lower(tenant)>".
func UpstreamLocalpart(slug, tenant string) string {
	return strings.ToLower(slug) + "_" + strings.ToLower(tenant)
}

func (e *Emulator) upUser(tenant, email string) *upUser {
	return e.om.users[tenant+"|"+strings.ToLower(email)]
}

// SetUpstreamDisplayName sets the name claim the provider sends for a
// platform account (MAS imports it as the display name when configured).
func (e *Emulator) SetUpstreamDisplayName(tenant, email, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u := e.upUser(tenant, email); u != nil {
		u.name = name
	}
}

// SetUpstreamHandle registers a handle for a platform account: the
// provider's preferred_username becomes the handle ("" removes it).
func (e *Emulator) SetUpstreamHandle(tenant, email, handle string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u := e.upUser(tenant, email); u != nil {
		u.handle = handle
	}
}

// SetUpstreamLocalpart forces the preferred_username claim of a platform
// account ("" sends none). OpenMeet always sends one; this is for MAS's
// claim-import rules.
func (e *Emulator) SetUpstreamLocalpart(tenant, email, localpart string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u := e.upUser(tenant, email); u != nil {
		u.claim, u.claimSet = localpart, true
	}
}

// SetUpstreamPassword changes a platform account's password (a rotated bot password).
func (e *Emulator) SetUpstreamPassword(tenant, email, password string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u := e.upUser(tenant, email); u != nil {
		u.password = password
	}
}

// PlatformSessions is the number of live platform sessions of an account
// (email logins not logged out).
func (e *Emulator) PlatformSessions(tenant, email string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	u := e.upUser(tenant, email)
	n := 0
	for _, s := range e.om.sessions {
		if s.user == u && !s.ended {
			n++
		}
	}
	return n
}

// uuid returns a random version 4 UUID (the session's secureId).
func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// emailFormTmpl is the provider's email-only form (oidc.controller.ts,
// the HTML of OidcController.showLoginForm).
var emailFormTmpl = template.Must(template.New("email").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in to Matrix</title></head>
<body><h2>Sign in to Matrix</h2><p>Enter your email address to continue to Matrix</p>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}<form method="POST" action="/api/oidc/login">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}<div class="form-group"><label for="email">Email address</label>
<input type="email" id="email" name="email" value="{{.Email}}" required></div>
<button type="submit">Continue</button>
</form></body></html>`))
