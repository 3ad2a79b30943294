package masemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

func (e *Emulator) masHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Metadata())
	})
	mux.HandleFunc("POST /oauth2/registration", e.register)
	mux.HandleFunc("GET /authorize", e.authorize)
	mux.HandleFunc("GET /login", e.login)
	mux.HandleFunc("GET /upstream/authorize/{provider}", e.upstreamAuthorize)
	mux.HandleFunc("GET /upstream/callback/{provider}", e.upstreamCallback)
	mux.HandleFunc("GET /upstream/link/{id}", e.linkPage)
	mux.HandleFunc("POST /upstream/link/{id}", e.linkSubmit)
	mux.HandleFunc("GET /register/steps/{id}/finish", e.registerFinish)
	mux.HandleFunc("GET /consent/{grant}", e.consentPage)
	mux.HandleFunc("POST /consent/{grant}", e.consentSubmit)
	mux.HandleFunc("POST /oauth2/token", e.token)
	mux.HandleFunc("POST /oauth2/revoke", e.revoke)
	mux.HandleFunc("GET /complete-compat-sso/{id}", e.compatPage)
	mux.HandleFunc("POST /complete-compat-sso/{id}", e.compatSubmit)
	mux.HandleFunc("/_matrix/client/v3/login", e.compatLogin)
	mux.HandleFunc("GET /_matrix/client/v3/login/sso/redirect", e.compatSSORedirect)
	return mux
}

// --- dynamic client registration (MSC2966) ---------------------------------

type clientMetadata struct {
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ApplicationType         string   `json:"application_type"`
	TOSURI                  string   `json:"tos_uri"`
	PolicyURI               string   `json:"policy_uri"`
	LogoURI                 string   `json:"logo_uri"`
	Contacts                []string `json:"contacts"`
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func hostWithin(host, parent string) bool {
	host, parent = strings.ToLower(host), strings.ToLower(parent)
	return host == parent || strings.HasSuffix(host, "."+parent)
}

// publicSuffixes are hosts MAS refuses as client hosts (a small stand-in for
// the public suffix list).
var publicSuffixes = map[string]bool{"com": true, "org": true, "net": true, "io": true, "co.uk": true, "github.io": true}

// checkClient applies MAS's registration policy; it returns the OAuth error
// code and the reasons.
func checkClient(m *clientMetadata) (string, []string) {
	var reasons []string
	cu, err := url.Parse(m.ClientURI)
	switch {
	case m.ClientURI == "":
		reasons = append(reasons, "client_uri is required")
	case err != nil || cu.Scheme != "https" || cu.Host == "":
		reasons = append(reasons, "client_uri must be an https URL")
	case isLoopback(cu.Hostname()):
		reasons = append(reasons, "client_uri must not be localhost")
	case publicSuffixes[strings.ToLower(cu.Hostname())]:
		reasons = append(reasons, "client_uri host is a public suffix")
	}
	for _, f := range []struct{ name, v string }{{"tos_uri", m.TOSURI}, {"policy_uri", m.PolicyURI}, {"logo_uri", m.LogoURI}} {
		if f.v == "" || cu == nil {
			continue
		}
		u, err := url.Parse(f.v)
		if err != nil || u.Scheme != "https" || !hostWithin(u.Hostname(), cu.Hostname()) {
			reasons = append(reasons, f.name+" must be https on the client_uri host")
		}
	}
	gt := map[string]bool{}
	for _, g := range m.GrantTypes {
		switch g {
		case "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code":
			gt[g] = true
		default:
			reasons = append(reasons, "grant type "+g+" is not allowed")
		}
	}
	if len(m.GrantTypes) == 0 {
		gt["authorization_code"] = true
	}
	if gt["authorization_code"] {
		ok := len(m.ResponseTypes) == 0
		for _, rt := range m.ResponseTypes {
			if rt == "code" {
				ok = true
			}
		}
		if !ok {
			reasons = append(reasons, "response_types must include code for the authorization_code grant")
		}
	}
	switch m.TokenEndpointAuthMethod {
	case "none", "":
	default:
		reasons = append(reasons, "the emulator only registers public clients (token_endpoint_auth_method none)")
	}
	if len(reasons) > 0 {
		return "invalid_client_metadata", reasons
	}
	appType := m.ApplicationType
	if appType == "" {
		appType = "web"
	}
	if appType != "web" && appType != "native" {
		return "invalid_client_metadata", []string{"application_type must be web or native"}
	}
	if gt["authorization_code"] && len(m.RedirectURIs) == 0 {
		return "invalid_redirect_uri", []string{"redirect_uris is required"}
	}
	for _, ru := range m.RedirectURIs {
		u, err := url.Parse(ru)
		if err != nil || u.Scheme == "" {
			reasons = append(reasons, "redirect_uri is not a URL")
			continue
		}
		if u.Fragment != "" || strings.Contains(ru, "#") {
			reasons = append(reasons, "redirect_uri must not have a fragment")
			continue
		}
		switch appType {
		case "web":
			if u.Scheme != "https" || !hostWithin(u.Hostname(), cu.Hostname()) {
				reasons = append(reasons, "web redirect_uri must be https on the client_uri host")
			}
		case "native":
			switch {
			case u.Scheme == "http" && isLoopback(u.Hostname()):
			case u.Scheme == reverseHost(cu.Hostname()):
			default:
				reasons = append(reasons, "native redirect_uri must be http on a loopback host or a private-use scheme of the reversed client_uri host")
			}
		}
	}
	if len(reasons) > 0 {
		return "invalid_redirect_uri", reasons
	}
	return "", nil
}

func reverseHost(h string) string {
	parts := strings.Split(strings.ToLower(h), ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

func (e *Emulator) register(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	down := e.faults.RegistrationDown
	e.mu.Unlock()
	if down {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "registration is down")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
		return
	}
	var m clientMetadata
	if err := json.Unmarshal(body, &m); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "body is not client metadata JSON")
		return
	}
	if code, reasons := checkClient(&m); code != "" {
		oauthError(w, http.StatusBadRequest, code, strings.Join(reasons, "; "))
		return
	}
	appType := m.ApplicationType
	if appType == "" {
		appType = "web"
	}
	// Identical public registrations get the same id.
	canon, _ := json.Marshal(m)
	sum := sha256.Sum256(canon)
	id := "01" + strings.ToUpper(hex.EncodeToString(sum[:12]))
	e.mu.Lock()
	e.clients[id] = &client{id: id, redirectURIs: m.RedirectURIs, applicationType: appType}
	e.stats.Registrations++
	e.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"client_id": id, "client_id_issued_at": e.now().Unix(), "client_name": m.ClientName,
		"client_uri": m.ClientURI, "redirect_uris": m.RedirectURIs, "grant_types": m.GrantTypes,
		"response_types": m.ResponseTypes, "token_endpoint_auth_method": "none", "application_type": appType,
	})
}

// --- authorization -----------------------------------------------------------

const (
	apiUnstable    = "urn:matrix:org.matrix.msc2967.client:api:"
	deviceUnstable = "urn:matrix:org.matrix.msc2967.client:device:"
	apiStable      = "urn:matrix:client:api:"
	deviceStable   = "urn:matrix:client:device:"
)

// checkScope applies MAS's scope rules; it returns the device id asked for.
func checkScope(scope string) (device string, problem string) {
	var stable, unstable, api bool
	devices := 0
	for _, s := range strings.Fields(scope) {
		switch {
		case strings.HasPrefix(s, apiUnstable):
			unstable, api = true, true
		case strings.HasPrefix(s, apiStable):
			stable, api = true, true
		case strings.HasPrefix(s, deviceUnstable):
			unstable = true
			devices++
			device = strings.TrimPrefix(s, deviceUnstable)
		case strings.HasPrefix(s, deviceStable):
			stable = true
			devices++
			device = strings.TrimPrefix(s, deviceStable)
		}
	}
	switch {
	case stable && unstable:
		return "", "stable and unstable Matrix scopes are mixed"
	case devices > 1:
		return "", "more than one device scope"
	case devices == 1 && !api:
		return "", "a device scope needs the Matrix API scope"
	}
	return device, ""
}

var deviceIDRe = regexp.MustCompile(`^[A-Za-z0-9._~!$&'()*+,;=:@/-]{10,}$`)

func (e *Emulator) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e.mu.Lock()
	c := e.clients[q.Get("client_id")]
	e.mu.Unlock()
	if c == nil {
		errorPage(w, http.StatusBadRequest, "Invalid client", "The client_id is not registered.")
		return
	}
	ru := q.Get("redirect_uri")
	ok := false
	for _, x := range c.redirectURIs {
		if x == ru {
			ok = true
		}
	}
	if !ok {
		errorPage(w, http.StatusBadRequest, "Invalid redirect URI", "The redirect_uri is not registered for this client.")
		return
	}
	fail := func(code, desc string) {
		redirect(w, http.StatusSeeOther, withQuery(ru, url.Values{"error": {code}, "error_description": {desc}, "state": {q.Get("state")}}))
	}
	if q.Get("response_type") != "code" {
		fail("unsupported_response_type", "only the code flow is enabled")
		return
	}
	if ch := q.Get("code_challenge"); ch != "" {
		if m := q.Get("code_challenge_method"); m != "S256" && m != "plain" && m != "" {
			fail("invalid_request", "unsupported code_challenge_method")
			return
		}
	}
	device, problem := checkScope(q.Get("scope"))
	if problem != "" {
		fail("invalid_scope", problem)
		return
	}
	sessUser := e.sessionUser(r)
	if q.Get("prompt") == "none" && sessUser == "" {
		fail("login_required", "no session and prompt=none")
		return
	}
	method := q.Get("code_challenge_method")
	if method == "" && q.Get("code_challenge") != "" {
		method = "plain"
	}
	g := &grant{id: ulid(), clientID: c.id, redirectURI: ru, scope: q.Get("scope"), state: q.Get("state"),
		nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), challengeMethod: method,
		loginHint: q.Get("login_hint"), device: device, created: e.now()}
	e.mu.Lock()
	e.grants[g.id] = g
	e.stats.Authorizations++
	e.mu.Unlock()
	if sessUser != "" {
		redirect(w, http.StatusSeeOther, "/consent/"+g.id)
		return
	}
	redirect(w, http.StatusSeeOther, "/login?"+url.Values{"kind": {"continue_authorization_grant"}, "id": {g.id}}.Encode())
}

func (e *Emulator) sessionUser(r *http.Request) string {
	sid := cookie(r, "session")
	if sid == "" {
		return ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sessions[sid]
}

// login: passwords are disabled and there is one upstream provider, so MAS
// goes straight to it.
func (e *Emulator) login(w http.ResponseWriter, r *http.Request) {
	kind, id := r.URL.Query().Get("kind"), r.URL.Query().Get("id")
	if !e.continuationExists(kind, id) {
		errorPage(w, http.StatusBadRequest, "Invalid login request", "Unknown or missing continuation.")
		return
	}
	redirect(w, http.StatusSeeOther, "/upstream/authorize/"+Provider+"?"+url.Values{"kind": {kind}, "id": {id}}.Encode())
}

func (e *Emulator) continuationExists(kind, id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch kind {
	case "continue_authorization_grant":
		g := e.grants[id]
		return g != nil && !g.done
	case "continue_compat_sso_login":
		c := e.compat[id]
		return c != nil && !c.done
	}
	return false
}

func (e *Emulator) upstreamAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("provider") != Provider {
		errorPage(w, http.StatusNotFound, "Unknown provider", "")
		return
	}
	kind, id := r.URL.Query().Get("kind"), r.URL.Query().Get("id")
	if !e.continuationExists(kind, id) {
		errorPage(w, http.StatusBadRequest, "Invalid login request", "Unknown or missing continuation.")
		return
	}
	s := &upSession{id: ulid(), state: random(""), nonce: random(""), kind: kind, contID: id}
	e.mu.Lock()
	if g := e.grants[id]; kind == "continue_authorization_grant" && g != nil {
		s.loginHint = g.loginHint // forward_login_hint
	}
	e.upSessions[s.id] = s
	e.mu.Unlock()
	setCookie(w, "upstream-oauth2-sessions", s.id)
	v := url.Values{
		"client_id": {UpstreamClientID}, "redirect_uri": {e.MASURL + "/upstream/callback/" + Provider},
		"response_type": {"code"}, "scope": {"openid email profile"}, "state": {s.state}, "nonce": {s.nonce},
		"max_age": {"3600"},
	}
	if !e.opts.UpstreamLoginForm {
		v.Set("prompt", "none")
	}
	if s.loginHint != "" {
		v.Set("login_hint", s.loginHint)
	}
	redirect(w, http.StatusTemporaryRedirect, e.UpstreamURL+"/api/oidc/auth?"+v.Encode())
}

func (e *Emulator) upstreamSession(r *http.Request) *upSession {
	id := cookie(r, "upstream-oauth2-sessions")
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.upSessions[id]
}

func (e *Emulator) upstreamCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s := e.upstreamSession(r)
	if s == nil || q.Get("state") != s.state {
		errorPage(w, http.StatusBadRequest, "Invalid upstream callback", "No matching upstream session (cookie or state).")
		return
	}
	if code := q.Get("error"); code != "" {
		errorPage(w, http.StatusBadRequest, "Upstream error", "The identity provider answered "+code+".")
		return
	}
	// MAS exchanges the code with the provider server-side.
	e.mu.Lock()
	uc := e.upCodes[q.Get("code")]
	delete(e.upCodes, q.Get("code"))
	e.mu.Unlock()
	if uc == nil || uc.redirectURI != e.MASURL+"/upstream/callback/"+Provider || e.now().Sub(uc.issued) > time.Minute {
		errorPage(w, http.StatusBadRequest, "Upstream error", "The provider's code was refused.")
		return
	}
	sub := "up-" + uc.user.tenant + "-" + strings.ToLower(uc.user.email)
	e.mu.Lock()
	lid, ok := e.linkBySub[sub]
	if !ok {
		lid = ulid()
		e.links[lid] = &link{id: lid, sub: sub, email: uc.user.email, localpart: uc.user.localpart}
		e.linkBySub[sub] = lid
	}
	e.links[lid].upSession = s.id
	s.linkID = lid
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, "/upstream/link/"+lid)
}

func (e *Emulator) linkFor(r *http.Request) (*link, *upSession) {
	s := e.upstreamSession(r)
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.links[r.PathValue("id")]
	if s == nil || l == nil || s.linkID != l.id {
		return nil, nil
	}
	return l, s
}

func (e *Emulator) continueTo(s *upSession) string {
	if s.kind == "continue_compat_sso_login" {
		return "/complete-compat-sso/" + s.contID
	}
	return "/consent/" + s.contID
}

func (e *Emulator) startSession(w http.ResponseWriter, localpart string) {
	sid := random("")
	e.mu.Lock()
	e.sessions[sid] = localpart
	e.mu.Unlock()
	setCookie(w, "session", sid)
}

func (e *Emulator) linkPage(w http.ResponseWriter, r *http.Request) {
	l, s := e.linkFor(r)
	if l == nil {
		errorPage(w, http.StatusBadRequest, "Invalid link", "No upstream session for this link.")
		return
	}
	e.mu.Lock()
	linked := l.user
	e.mu.Unlock()
	if linked != "" {
		e.startSession(w, linked)
		redirect(w, http.StatusSeeOther, e.continueTo(s))
		return
	}
	p := page{Title: "Create your account", Form: true, Button: "Create account",
		Hidden: []field{{Name: "csrf", Value: csrfToken(w, r, "csrf")}, {Name: "action", Value: "register"}},
		Checks: []field{{Name: "import_display_name", Label: "Use the display name"}, {Name: "import_email", Label: "Use the email " + l.email}},
	}
	if !e.opts.NoTerms {
		p.Checks = append(p.Checks, field{Name: "accept_terms", Label: "I accept the terms of service"})
	}
	renderPage(w, http.StatusOK, p)
}

func (e *Emulator) linkSubmit(w http.ResponseWriter, r *http.Request) {
	l, _ := e.linkFor(r)
	if l == nil {
		errorPage(w, http.StatusBadRequest, "Invalid link", "No upstream session for this link.")
		return
	}
	if !csrfOK(r, "csrf") {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "The form's csrf token is missing or does not match.")
		return
	}
	if r.PostFormValue("action") != "register" {
		errorPage(w, http.StatusBadRequest, "Invalid action", "Expected action=register.")
		return
	}
	if !e.opts.NoTerms && r.PostFormValue("accept_terms") != "on" {
		errorPage(w, http.StatusBadRequest, "Terms not accepted", "accept_terms=on is required.")
		return
	}
	if l.localpart == "" {
		errorPage(w, http.StatusBadRequest, "Missing localpart", "The provider sent no preferred_username; the localpart is required.")
		return
	}
	e.mu.Lock()
	if u := e.users[l.localpart]; u != nil && e.linkedUser(l.localpart) {
		e.mu.Unlock()
		errorPage(w, http.StatusBadRequest, "Username taken", "The localpart is already in use.")
		return
	}
	e.users[l.localpart] = &user{localpart: l.localpart, email: l.email}
	l.user = l.localpart
	e.stats.AccountsCreated++
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, "/register/steps/"+l.id+"/finish")
}

// linkedUser reports whether a localpart belongs to a linked account (mu held).
func (e *Emulator) linkedUser(localpart string) bool {
	for _, l := range e.links {
		if l.user == localpart {
			return true
		}
	}
	return false
}

func (e *Emulator) registerFinish(w http.ResponseWriter, r *http.Request) {
	l, s := e.linkFor(r)
	if l == nil || l.user == "" {
		errorPage(w, http.StatusBadRequest, "Invalid registration", "")
		return
	}
	e.startSession(w, l.user)
	redirect(w, http.StatusSeeOther, e.continueTo(s))
}

func (e *Emulator) consentPage(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	g := e.grants[r.PathValue("grant")]
	noCSRF := e.faults.ConsentWithoutCSRF
	e.mu.Unlock()
	if g == nil || g.done {
		errorPage(w, http.StatusBadRequest, "Invalid grant", "Unknown or finished authorization grant.")
		return
	}
	if e.sessionUser(r) == "" {
		redirect(w, http.StatusSeeOther, "/login?"+url.Values{"kind": {"continue_authorization_grant"}, "id": {g.id}}.Encode())
		return
	}
	if g.device != "" && !deviceIDRe.MatchString(g.device) {
		errorPage(w, http.StatusBadRequest, "Invalid device ID", "A device ID must be at least 10 characters of [A-Za-z0-9._~!$&'()*+,;=:@/-].")
		return
	}
	p := page{Title: "Allow access to your account?", Form: true, Button: "Continue"}
	if !noCSRF {
		p.Hidden = []field{{Name: "csrf", Value: csrfToken(w, r, "csrf")}}
	}
	renderPage(w, http.StatusOK, p)
}

func (e *Emulator) consentSubmit(w http.ResponseWriter, r *http.Request) {
	u := e.sessionUser(r)
	if u == "" {
		errorPage(w, http.StatusBadRequest, "Not logged in", "")
		return
	}
	if !csrfOK(r, "csrf") {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "The form's csrf token is missing or does not match.")
		return
	}
	e.mu.Lock()
	g := e.grants[r.PathValue("grant")]
	if g == nil || g.done {
		e.mu.Unlock()
		errorPage(w, http.StatusBadRequest, "Invalid grant", "Unknown or finished authorization grant.")
		return
	}
	if g.device != "" && !deviceIDRe.MatchString(g.device) {
		e.mu.Unlock()
		errorPage(w, http.StatusBadRequest, "Invalid device ID", "")
		return
	}
	g.done = true
	c := &authCode{code: random(""), grant: g, user: u, issued: e.now()}
	e.codes[c.code] = c
	e.stats.CodesIssued++
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, withQuery(g.redirectURI, url.Values{"code": {c.code}, "state": {g.state}}))
}

// --- tokens -------------------------------------------------------------------

func (e *Emulator) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	f := r.PostForm
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.clients[f.Get("client_id")]
	if c == nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	switch f.Get("grant_type") {
	case "authorization_code":
		ac := e.codes[f.Get("code")]
		switch {
		case ac == nil:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
			return
		case ac.used:
			// A replayed code ends what it issued.
			e.stats.CodeReuse++
			for _, a := range ac.issuedTok {
				a.revoked = true
				if a.pair != nil {
					a.pair.revoked = true
				}
			}
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was already used")
			return
		case e.now().Sub(ac.issued) > e.opts.CodeTTL:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code has expired")
			return
		case ac.grant.clientID != c.id:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was issued to another client")
			return
		case f.Get("redirect_uri") != ac.grant.redirectURI:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match")
			return
		}
		verifier := f.Get("code_verifier")
		switch {
		case ac.grant.challenge != "" && verifier == "":
			oauthError(w, http.StatusBadRequest, "invalid_request", "code_verifier is required")
			return
		case ac.grant.challenge == "" && verifier != "":
			oauthError(w, http.StatusBadRequest, "invalid_request", "code_verifier without a code_challenge")
			return
		case ac.grant.challenge != "":
			want := verifier
			if ac.grant.challengeMethod == "S256" {
				want = s256(verifier)
			}
			if want != ac.grant.challenge {
				ac.used = true
				oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
				return
			}
		}
		ac.used = true
		a, rt := e.issue(ac.user, ac.grant.device, c.id, ac.grant.scope)
		ac.issuedTok = append(ac.issuedTok, a)
		e.tokenResponse(w, a, rt, ac.grant.scope)
	case "refresh_token":
		old := e.refresh[f.Get("refresh_token")]
		switch {
		case old == nil || old.revoked:
			e.stats.RefreshRejected++
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown or revoked refresh token")
			return
		case old.clientID != c.id:
			e.stats.RefreshRejected++
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token belongs to another client")
			return
		case old.next != nil && (old.next.used || (old.next.access != nil && old.next.access.used)):
			// The successor is in use: the old token is dead.
			e.stats.RefreshRejected++
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was already used")
			return
		}
		if old.next != nil { // successor never used: replace it
			old.next.revoked = true
			if old.next.access != nil {
				old.next.access.revoked = true
			}
		}
		old.used = true
		a, rt := e.issue(old.user, old.device, c.id, old.scope)
		old.next = rt
		e.stats.Refreshes++
		e.tokenResponse(w, a, rt, old.scope)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
	}
}

// issue makes an access/refresh pair (mu held).
func (e *Emulator) issue(localpart, device, clientID, scope string) (*accessToken, *refreshToken) {
	a := &accessToken{token: random("mat_"), user: localpart, device: device, clientID: clientID,
		expires: e.now().Add(e.opts.AccessTTL)}
	rt := &refreshToken{token: random("mar_"), user: localpart, device: device, clientID: clientID, scope: scope, access: a}
	a.pair = rt
	e.access[a.token] = a
	e.refresh[rt.token] = rt
	e.stats.TokensIssued++
	return a, rt
}

func (e *Emulator) tokenResponse(w http.ResponseWriter, a *accessToken, rt *refreshToken, scope string) {
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": a.token, "token_type": "Bearer", "expires_in": int(e.opts.AccessTTL / time.Second),
		"refresh_token": rt.token, "scope": scope,
	})
}

func (e *Emulator) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.clients[r.PostForm.Get("client_id")] == nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	t := r.PostForm.Get("token")
	if a := e.access[t]; a != nil {
		a.revoked = true
	}
	if rt := e.refresh[t]; rt != nil {
		rt.revoked = true
		if rt.access != nil {
			rt.access.revoked = true
		}
	}
	w.WriteHeader(http.StatusOK)
}

// lookupToken checks an access token for the Matrix front (marks it used).
func (e *Emulator) lookupToken(t string) (*accessToken, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.access[t]
	if a == nil || a.revoked || (!a.expires.IsZero() && !e.now().Before(a.expires)) {
		e.stats.UnknownTokenReply++
		return nil, false
	}
	a.used = true
	return a, true
}
