// Package masemu is a strict in-process emulator of MAS
// (matrix-authentication-service) with an OpenMeet-like upstream OIDC
// provider and a Matrix front in front of a homeserver. It holds clients to
// MAS's rules (registration policy, exact redirect URIs, cookies and CSRF on
// every form, single-use codes, PKCE, short-lived access tokens, refresh
// rotation with the reuse rule) so a client that passes it should pass MAS.
//
// It is test and demo code: the daemon never imports it.
package masemu

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// Provider is the id of the first upstream provider: OpenMeet's MAS
// registers its provider under this ULID (openmeet-api
// matrix-config/mas-config.gomplate.yaml, upstream_oauth2.providers). The
// n-th provider's id is ProviderID(n).
const Provider = "01JAYS74TCG3BTWKADN5Q4518C"

// ProviderID returns the id of the n-th provider (1-based).
func ProviderID(n int) string {
	if n <= 1 {
		return Provider
	}
	return fmt.Sprintf("01J5MXPR0BE0PR0V1DER%05dB", n)
}

// ProviderName returns the human name of the n-th provider, as MAS's login
// page shows it.
func ProviderName(n int) string {
	if n <= 1 {
		return "OpenMeet"
	}
	return fmt.Sprintf("OpenMeet %d", n)
}

// UpstreamClientID is MAS's client id at the upstream provider (OpenMeet's
// mas-config.gomplate.yaml: mas_client).
const UpstreamClientID = "mas_client"

// Claim import actions of an upstream provider
// (crates/config/src/sections/upstream_oauth2.rs ImportAction; the default
// is ignore).
const (
	ImportIgnore  = "ignore"
	ImportSuggest = "suggest"
	ImportForce   = "force"
	ImportRequire = "require"
)

// Response modes of the upstream provider's answer.
const (
	ResponseModeQuery    = "query"
	ResponseModeFormPost = "form_post"
)

// Options configure an emulator. The zero value is MAS's default
// configuration with one upstream provider.
type Options struct {
	// Dendrite is the homeserver behind the Matrix front. Without one, the
	// front answers /account/whoami itself and nothing else.
	Dendrite *testenv.Dendrite
	// ServerName of the Matrix user ids (default: Dendrite's, else "localhost").
	ServerName string
	// AccessTTL is the access token lifetime (default 300 s, as MAS).
	AccessTTL time.Duration
	// CodeTTL is the authorization code lifetime (default 10 min, as MAS).
	CodeTTL time.Duration
	// NoTerms hides the terms checkbox of the account creation form (OpenMeet
	// sets a terms-of-service URL, so accept_terms is required by default).
	NoTerms bool
	// PasswordsDisabled is MAS's passwords.enabled: false. MAS enables
	// password login by default (crates/config/src/sections/passwords.rs),
	// which makes /login a page (with the providers as links) and serves
	// compat m.login.password.
	PasswordsDisabled bool
	// Providers is the number of upstream providers (default 1). They all
	// lead to the same platform, each with its own id and callback.
	Providers int
	// LocalpartImport, DisplayNameImport and EmailImport are the providers'
	// claims_imports actions (default ignore, as MAS).
	LocalpartImport, DisplayNameImport, EmailImport string
	// ForwardLoginHint is the provider's forward_login_hint (default off:
	// MAS sends no login_hint upstream).
	ForwardLoginHint bool
	// AdditionalAuthorizationParameters are the provider's
	// additional_authorization_parameters, added to the authorization
	// request upstream (crates/handlers/src/upstream_oauth2/authorize.rs,
	// get(): render_additional_authorization_parameters).
	AdditionalAuthorizationParameters map[string]string
	// ResponseMode is the provider's response_mode: query (default) or
	// form_post (the provider answers with an auto-posting form).
	ResponseMode string
	// ProviderPasswordForm makes the upstream provider a generic one that
	// shows an email and password form of its own when there is no session
	// (OpenMeet's shows an email-only form that hands over to the web app).
	ProviderPasswordForm bool
	// ProviderTokenLimit is the provider token endpoint's limit per minute: 0
	// is production's 10; the platform allows 1000 when NODE_ENV is not
	// production (openmeet-api src/oidc/oidc.controller.ts,
	// OidcController.token and its @Throttle).
	ProviderTokenLimit int
	// SessionLimit is experimental.session_limit's soft limit (0: none).
	SessionLimit int
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Faults switch on deviations for negative tests.
type Faults struct {
	// AuthMetadata404 makes the homeserver answer 404 on auth_metadata
	// (both paths), as a homeserver that does not delegate auth.
	AuthMetadata404 bool
	// ConsentWithoutCSRF renders the consent page without its csrf input.
	ConsentWithoutCSRF bool
	// RegistrationDown makes client registration answer 503.
	RegistrationDown bool
	// UpstreamSessionExpired makes the provider ignore its session cookies
	// (the platform session expired between the email login and /auth).
	UpstreamSessionExpired bool
}

// Stats count what the emulator saw.
type Stats struct {
	Registrations     int
	Authorizations    int
	UpstreamLogins    int
	AccountsCreated   int
	CodesIssued       int
	TokensIssued      int
	Refreshes         int
	RefreshRejected   int
	CodeReuse         int
	UnknownTokenReply int
	CompatLogins      int
	Revocations       int
	PolicyViolations  int
	// ProviderTokenRequests and ProviderTokenRateLimited count requests to
	// the provider's token endpoint and its 429 answers.
	ProviderTokenRequests    int
	ProviderTokenRateLimited int
	// PlatformLogouts counts platform sessions ended by logout.
	PlatformLogouts int
	// Introspections counts POST /oauth2/introspect answers (from a
	// delegating Synapse), IntrospectionsActive those that said active.
	Introspections, IntrospectionsActive int
	// SynapseProvisions, SynapseDeviceUpserts and SynapseDeviceSyncs count
	// MAS's successful calls to a delegating Synapse's /_synapse/mas/*;
	// SynapseSyncErrors the device syncs that failed.
	SynapseProvisions, SynapseDeviceUpserts, SynapseDeviceSyncs, SynapseSyncErrors int
}

// Emulator is a running MAS, upstream provider and Matrix front.
type Emulator struct {
	// MASURL is MAS's public base URL (MAS_PUBLIC_URL).
	MASURL string
	// UpstreamURL is the platform API / OIDC provider base URL.
	UpstreamURL string
	// HomeserverURL is the Matrix front the bots use as homeserver.
	HomeserverURL string
	ServerName    string

	opts Options
	mas  *httptest.Server
	up   *httptest.Server
	hs   *httptest.Server

	mu       sync.Mutex
	faults   Faults
	stats    Stats
	masDown  bool
	requests []string

	clients       map[string]*client
	grants        map[string]*grant
	upSessions    map[string]*upSession
	links         map[string]*link
	linkBySub     map[string]string
	users         map[string]*user // by localpart
	sessions      map[string]string
	registrations map[string]*registration
	codes         map[string]*authCode
	access        map[string]*accessToken
	refresh       map[string]*refreshToken
	oauthSessions []*oauthSession
	compatSess    []*compatSession
	compat        map[string]*compatLogin
	loginTokens   map[string]*loginToken

	// A Synapse delegating its authentication to the emulator (synapse.go).
	synapseSecret string
	syn           *synapseConn
	synapse       *testenv.Synapse
	synProxy      *httputil.ReverseProxy
	dendProxy     *httputil.ReverseProxy
	provisioned   map[string]bool
	jobs          sync.WaitGroup
	closed        bool

	om         provider // the upstream platform
	masPass    map[string]string
	dendriteMu sync.Mutex
	dendPass   map[string]string // localpart → password only the emulator knows
	dendTokens map[string]string // localpart|device → Dendrite token
}

type client struct {
	id              string
	name            string
	redirectURIs    []string
	applicationType string
}

type grant struct {
	id, clientID, redirectURI, scope, state, nonce string
	challenge, challengeMethod, loginHint          string
	device                                         string
	done                                           bool
	created                                        time.Time
}

type upSession struct {
	id, state, nonce string
	provider         int
	kind, contID     string // "continue_authorization_grant" or "continue_compat_sso_login", and its id
	loginHint        string
	linkID           string
	consumed         bool
}

type link struct {
	id, sub                string
	provider               int
	email, localpart, name string // the provider's claims
	user                   string // linked MAS user (localpart), or ""
	upSession              string
}

type user struct{ localpart, email, displayName string }

// registration is a pending user registration (MAS's user_registration):
// the finish step creates the user once every step is done.
type registration struct {
	id, linkID, upSession    string
	localpart, email         string
	displayName              string
	hasDisplayName, finished bool
}

// oauthSession is an OAuth 2.0 session: every code exchange starts one
// (crates/handlers/src/oauth2/token.rs, authorization_code_grant); only
// revocation ends it.
type oauthSession struct {
	id, user, clientID, device, scope string
	created                           time.Time
	finished                          bool
}

// compatSession is a compatibility (m.login.*) session.
type compatSession struct {
	id, user, device string
	finished         bool
	// synapseAdmin: the session grants Synapse admin rights (issued by
	// mas-cli manage issue-compatibility-token
	// --yes-i-want-to-grant-synapse-admin-privileges).
	synapseAdmin bool
}

type authCode struct {
	code      string
	grant     *grant
	user      string
	issued    time.Time
	used      bool
	exchanged time.Time
	session   *oauthSession
}

type accessToken struct {
	token, user, device, clientID string
	expires                       time.Time // zero: never
	revoked, used                 bool
	pair                          *refreshToken
	session                       *oauthSession
	compat                        *compatSession
}

type refreshToken struct {
	token, user, device, clientID, scope string
	revoked, used                        bool
	next                                 *refreshToken
	access                               *accessToken
	session                              *oauthSession
}

type compatLogin struct {
	id, redirectURL string
	user            string
	done            bool
}

type loginToken struct {
	token, user string
	expires     time.Time
}

// SessionInfo describes an active session of a user (OAuth 2.0 or compat).
type SessionInfo struct {
	ID, Kind, ClientID, DeviceID, Scope string
}

// Start runs an emulator on loopback listeners (MAS, the provider and the
// Matrix front on distinct loopback hosts where the system allows, so their
// cookies stay apart as they would on real hosts).
func Start(opts Options) (*Emulator, error) {
	if opts.AccessTTL == 0 {
		opts.AccessTTL = 300 * time.Second
	}
	if opts.CodeTTL == 0 {
		opts.CodeTTL = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Providers <= 0 {
		opts.Providers = 1
	}
	for _, a := range []*string{&opts.LocalpartImport, &opts.DisplayNameImport, &opts.EmailImport} {
		switch *a {
		case "":
			*a = ImportIgnore
		case ImportIgnore, ImportSuggest, ImportForce, ImportRequire:
		default:
			return nil, fmt.Errorf("masemu: unknown import action %q", *a)
		}
	}
	switch opts.ResponseMode {
	case "":
		opts.ResponseMode = ResponseModeQuery
	case ResponseModeQuery, ResponseModeFormPost:
	default:
		return nil, fmt.Errorf("masemu: unknown response mode %q", opts.ResponseMode)
	}
	e := &Emulator{opts: opts,
		clients: map[string]*client{}, grants: map[string]*grant{}, upSessions: map[string]*upSession{},
		links: map[string]*link{}, linkBySub: map[string]string{}, users: map[string]*user{},
		sessions: map[string]string{}, registrations: map[string]*registration{}, codes: map[string]*authCode{}, access: map[string]*accessToken{},
		refresh: map[string]*refreshToken{}, compat: map[string]*compatLogin{}, loginTokens: map[string]*loginToken{},
		om:      newProvider(opts.ProviderTokenLimit),
		masPass: map[string]string{}, dendPass: map[string]string{}, dendTokens: map[string]string{},
		synapseSecret: random("mss_"), provisioned: map[string]bool{},
	}
	e.ServerName = opts.ServerName
	if e.ServerName == "" {
		if opts.Dendrite != nil {
			e.ServerName = opts.Dendrite.ServerName
		} else {
			e.ServerName = "localhost"
		}
	}
	var err error
	if e.mas, err = serve("127.0.0.1", e.masHandler()); err != nil {
		return nil, err
	}
	if e.up, err = serve("127.0.0.2", e.upstreamHandler()); err != nil {
		e.mas.Close()
		return nil, err
	}
	if e.hs, err = serve("127.0.0.3", e.frontHandler()); err != nil {
		e.mas.Close()
		e.up.Close()
		return nil, err
	}
	e.MASURL, e.UpstreamURL, e.HomeserverURL = e.mas.URL, e.up.URL, e.hs.URL
	return e, nil
}

// serve starts a server on host (falling back to 127.0.0.1 where other
// loopback addresses are not configured).
func serve(host string, h http.Handler) (*httptest.Server, error) {
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Start()
	return s, nil
}

// Close stops every server.
func (e *Emulator) Close() {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.jobs.Wait() // background device syncs
	e.mu.Lock()
	mas := e.mas
	e.mu.Unlock()
	mas.Close()
	e.up.Close()
	e.hs.Close()
	mas.Client().CloseIdleConnections()
	e.om.client.CloseIdleConnections()
}

// StopMAS takes MAS down (connections refused); the Matrix front stays up
// and answers MAS's routes (login, logout) 502, as a reverse proxy whose
// upstream is gone. StartMAS brings it back.
func (e *Emulator) StopMAS() {
	e.mu.Lock()
	e.masDown = true
	mas := e.mas
	e.mu.Unlock()
	mas.Close()
}

// StartMAS brings MAS back after StopMAS on the same address, with every
// client, session and token it had (MAS restarted on its database): what
// was valid before the outage is valid after it.
func (e *Emulator) StartMAS() error {
	e.mu.Lock()
	if !e.masDown || e.closed {
		e.mu.Unlock()
		return nil
	}
	addr := e.mas.Listener.Addr().String()
	e.mu.Unlock()
	var l net.Listener
	var err error
	// The old listener is closed; its port may take a moment to be free.
	for range 50 {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("masemu: MAS back on %s: %w", addr, err)
	}
	s := httptest.NewUnstartedServer(e.masHandler())
	s.Listener.Close()
	s.Listener = l
	s.Start()
	e.mu.Lock()
	e.mas, e.masDown = s, false
	e.mu.Unlock()
	return nil
}

// StopUpstream takes the upstream provider down.
func (e *Emulator) StopUpstream() { e.up.Close() }

// SetFaults replaces the active faults.
func (e *Emulator) SetFaults(f Faults) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = f
}

// Stats returns the counters so far.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// UserDisplayName returns a MAS user's display name ("" when none or no user).
func (e *Emulator) UserDisplayName(localpart string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if u := e.users[localpart]; u != nil {
		return u.displayName
	}
	return ""
}

// ActiveSessions lists a user's active sessions: OAuth 2.0 sessions not
// finished and compat sessions not finished (what MAS counts for
// session_limit, crates/handlers/src/session.rs count_user_sessions_for_limiting).
func (e *Emulator) ActiveSessions(localpart string) []SessionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.activeSessions(localpart)
}

// activeSessions is ActiveSessions with mu held.
func (e *Emulator) activeSessions(localpart string) []SessionInfo {
	var out []SessionInfo
	for _, s := range e.oauthSessions {
		if s.user == localpart && !s.finished {
			out = append(out, SessionInfo{ID: s.id, Kind: "oauth2", ClientID: s.clientID, DeviceID: s.device, Scope: s.scope})
		}
	}
	for _, s := range e.compatSess {
		if s.user == localpart && !s.finished {
			out = append(out, SessionInfo{ID: s.id, Kind: "compat", DeviceID: s.device})
		}
	}
	return out
}

// Requests returns the log of requests MAS served, as "METHOD /path".
func (e *Emulator) Requests() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.requests...)
}

// LinkUpstreamUser creates a MAS account for a platform account and links it
// to the n-th provider, as if the account had logged in before.
func (e *Emulator) LinkUpstreamUser(tenant, email string, provider int, localpart string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	u := e.upUser(tenant, email)
	if u == nil {
		return
	}
	l := e.linkOf(provider, e.claimsOf(u))
	e.users[localpart] = &user{localpart: localpart, email: u.email, displayName: u.name}
	l.user = localpart
}

// SetMASPassword gives a MAS user a password (compat m.login.password,
// with Options.PasswordsEnabled). The MAS user is created if needed.
func (e *Emulator) SetMASPassword(localpart, password string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.users[localpart] == nil {
		e.users[localpart] = &user{localpart: localpart}
	}
	e.masPass[localpart] = password
}

// UseHomeserverAccount tells the Matrix front the password of an account
// that already exists on the homeserver, so MAS sessions of that user map to
// it (instead of the front registering the account itself).
func (e *Emulator) UseHomeserverAccount(localpart, password string) {
	e.dendriteMu.Lock()
	defer e.dendriteMu.Unlock()
	e.dendPass[localpart] = password
}

// HasUser reports whether MAS has an account with that localpart.
func (e *Emulator) HasUser(localpart string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.users[localpart] != nil
}

// ForgetClients drops every client registration (MAS's database was reset).
func (e *Emulator) ForgetClients() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.clients = map[string]*client{}
}

// RevokeRefreshTokens revokes every refresh token of a user (an admin
// ended the sessions' refresh ability); access tokens live on until expiry.
func (e *Emulator) RevokeRefreshTokens(localpart string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.refresh {
		if r.user == localpart {
			r.revoked = true
		}
	}
}

// ExpireAccessTokens makes every access token of a user expired now.
func (e *Emulator) ExpireAccessTokens(localpart string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, a := range e.access {
		if a.user == localpart {
			a.expires = e.opts.Now().Add(-time.Second)
		}
	}
}

// Metadata is the OAuth 2.0 authorization server metadata MAS serves.
func (e *Emulator) Metadata() map[string]any {
	b := e.MASURL
	return map[string]any{
		"issuer":                                b + "/",
		"authorization_endpoint":                b + "/authorize",
		"token_endpoint":                        b + "/oauth2/token",
		"registration_endpoint":                 b + "/oauth2/registration",
		"revocation_endpoint":                   b + "/oauth2/revoke",
		"introspection_endpoint":                b + "/oauth2/introspect",
		"userinfo_endpoint":                     b + "/oauth2/userinfo",
		"jwks_uri":                              b + "/oauth2/keys.json",
		"response_types_supported":              []string{"code", "id_token", "code id_token"},
		"response_modes_supported":              []string{"form_post", "query", "fragment"},
		"grant_types_supported":                 []string{"authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"},
		"code_challenge_methods_supported":      []string{"plain", "S256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt", "none"},
		"scopes_supported":                      []string{"openid", "email"},
		"prompt_values_supported":               []string{"none", "login", "create"},
		"account_management_uri":                b + "/account/",
	}
}

// --- helpers ---------------------------------------------------------------

func random(prefix string) string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func ulid() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func matrixError(w http.ResponseWriter, status int, code, msg string, extra map[string]any) {
	body := map[string]any{"errcode": code, "error": msg}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, status, body)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1>{{if .Message}}<p class="error">{{.Message}}</p>{{end}}
{{if .Form}}<form method="post" action="{{.Action}}">
{{range .Hidden}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}{{range .Text}}<label>{{.Label}} <input type="{{.Type}}" name="{{.Name}}" value=""></label>
{{end}}{{range .Checks}}<label><input type="checkbox" name="{{.Name}}"> {{.Label}}</label>
{{end}}<button type="submit">{{.Button}}</button>
</form>{{end}}
</body></html>`))

type field struct{ Name, Value, Label, Type string }

type page struct {
	Title, Message, Action, Button string
	Form                           bool
	Hidden, Text, Checks           []field
}

func renderPage(w http.ResponseWriter, status int, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, p)
}

func errorPage(w http.ResponseWriter, status int, title, msg string) {
	renderPage(w, status, page{Title: title, Message: msg})
}

func redirect(w http.ResponseWriter, status int, to string) {
	w.Header().Set("Location", to)
	w.WriteHeader(status)
}

// withQuery appends parameters to a URL that may already have a query.
func withQuery(base string, v url.Values) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	for k, vs := range v {
		for _, x := range vs {
			q.Add(k, x)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func cookie(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

func setCookie(w http.ResponseWriter, name, value string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// csrfToken returns the browser's csrf cookie, setting one if absent.
func csrfToken(w http.ResponseWriter, r *http.Request, name string) string {
	if v := cookie(r, name); v != "" {
		return v
	}
	v := random("")
	setCookie(w, name, v)
	return v
}

// csrfOK checks the form's csrf value against the cookie (both required).
func csrfOK(r *http.Request, cookieName string) bool {
	c := cookie(r, cookieName)
	return c != "" && r.PostFormValue("csrf") == c
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ctxTimeout bounds the emulator's own calls to Dendrite.
func ctxTimeout(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 15*time.Second)
}

func (e *Emulator) now() time.Time { return e.opts.Now() }

func (e *Emulator) count(f func(s *Stats)) {
	e.mu.Lock()
	f(&e.stats)
	e.mu.Unlock()
}

// String describes the emulator (for logs); no secrets.
func (e *Emulator) String() string {
	return fmt.Sprintf("masemu{mas=%s upstream=%s homeserver=%s}", e.MASURL, e.UpstreamURL, e.HomeserverURL)
}
