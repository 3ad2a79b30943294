package masemu

import (
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// --- authorization -----------------------------------------------------------

// authorize is GET /authorize (crates/handlers/src/oauth2/authorization/mod.rs).
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
	// prompt=none always fails: MAS never lets it through, session or not
	// (crates/handlers/src/oauth2/authorization/mod.rs, get(): it fails early
	// on prompt=none).
	for _, p := range strings.Fields(q.Get("prompt")) {
		if p == "none" {
			fail("login_required", "")
			return
		}
	}
	method := q.Get("code_challenge_method")
	if method == "" && q.Get("code_challenge") != "" {
		method = "plain"
	}
	// The scope is checked by the authorization grant policy at consent
	// (policy.go), not here.
	g := &grant{id: ulid(), clientID: c.id, redirectURI: ru, scope: q.Get("scope"), state: q.Get("state"),
		nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), challengeMethod: method,
		loginHint: q.Get("login_hint"), device: deviceOf(q.Get("scope")), created: e.now()}
	e.mu.Lock()
	e.grants[g.id] = g
	e.stats.Authorizations++
	e.mu.Unlock()
	if e.sessionUser(r) != "" {
		redirect(w, http.StatusSeeOther, "/consent/"+g.id)
		return
	}
	redirect(w, http.StatusSeeOther, "/login?"+continuation("continue_authorization_grant", g.id))
}

func continuation(kind, id string) string {
	return url.Values{"kind": {kind}, "id": {id}}.Encode()
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

// login is GET /login (crates/handlers/src/views/login.rs): a page unless
// password login is off and exactly one provider exists (get() then redirects
// straight to that provider).
func (e *Emulator) login(w http.ResponseWriter, r *http.Request) {
	kind, id := r.URL.Query().Get("kind"), r.URL.Query().Get("id")
	if !e.continuationExists(kind, id) {
		errorPage(w, http.StatusBadRequest, "Invalid login request", "Unknown or missing continuation.")
		return
	}
	if e.opts.PasswordsDisabled && e.opts.Providers == 1 {
		redirect(w, http.StatusSeeOther, "/upstream/authorize/"+Provider+"?"+continuation(kind, id))
		return
	}
	e.renderLogin(w, r, kind, id, "")
}

func (e *Emulator) renderLogin(w http.ResponseWriter, r *http.Request, kind, id, msg string) {
	v := loginView{CSRF: csrfToken(w, r, "csrf"), Password: !e.opts.PasswordsDisabled, Error: msg,
		Params: "?" + continuation(kind, id)}
	for i := 1; i <= e.opts.Providers; i++ {
		v.Providers = append(v.Providers, providerLink{ID: ProviderID(i), Name: ProviderName(i)})
	}
	renderMAS(w, http.StatusOK, "login", v)
}

// loginSubmit is the password form of the login page.
func (e *Emulator) loginSubmit(w http.ResponseWriter, r *http.Request) {
	if e.opts.PasswordsDisabled {
		errorPage(w, http.StatusBadRequest, "Password login is disabled", "")
		return
	}
	if !csrfOK(r, "csrf") {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "The form's csrf token is missing or does not match.")
		return
	}
	kind, id := r.URL.Query().Get("kind"), r.URL.Query().Get("id")
	u := r.PostFormValue("username")
	e.mu.Lock()
	pw, ok := e.masPass[u]
	e.mu.Unlock()
	if !ok || pw == "" || pw != r.PostFormValue("password") {
		e.renderLogin(w, r, kind, id, "Invalid credentials.")
		return
	}
	e.startSession(w, u)
	redirect(w, http.StatusSeeOther, e.next(kind, id))
}

// next is where a finished login continues (the post-auth action).
func (e *Emulator) next(kind, id string) string {
	if kind == "continue_compat_sso_login" {
		return "/complete-compat-sso/" + id
	}
	return "/consent/" + id
}

// logout is POST /logout (crates/handlers/src/views/logout.rs): it ends the
// browser session and resumes the post-logout action (post(), from the form's
// PostAuthAction), which leads back to the page that showed the logout form.
func (e *Emulator) logout(w http.ResponseWriter, r *http.Request) {
	if !csrfOK(r, "csrf") {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "")
		return
	}
	e.mu.Lock()
	delete(e.sessions, cookie(r, "session"))
	e.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "session", Value: "", Path: "/", MaxAge: -1})
	kind, id := r.PostFormValue("kind"), r.PostFormValue("id")
	if kind == "" {
		redirect(w, http.StatusSeeOther, "/login")
		return
	}
	redirect(w, http.StatusSeeOther, e.next(kind, id))
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

// providerIndex returns the 1-based index of a provider id (0: unknown).
func (e *Emulator) providerIndex(id string) int {
	for i := 1; i <= e.opts.Providers; i++ {
		if ProviderID(i) == id {
			return i
		}
	}
	return 0
}

func upstreamClientID(n int) string {
	if n <= 1 {
		return UpstreamClientID
	}
	return UpstreamClientID + "-" + strconv.Itoa(n)
}

func (e *Emulator) callbackURL(n int) string {
	return e.MASURL + "/upstream/callback/" + ProviderID(n)
}

// upstreamAuthorize is GET /upstream/authorize/{id}
// (crates/handlers/src/upstream_oauth2/authorize.rs): no prompt, login_hint
// only with forward_login_hint (get()), response_mode when configured.
func (e *Emulator) upstreamAuthorize(w http.ResponseWriter, r *http.Request) {
	n := e.providerIndex(r.PathValue("provider"))
	if n == 0 {
		errorPage(w, http.StatusNotFound, "Unknown provider", "")
		return
	}
	kind, id := r.URL.Query().Get("kind"), r.URL.Query().Get("id")
	if !e.continuationExists(kind, id) {
		errorPage(w, http.StatusBadRequest, "Invalid login request", "Unknown or missing continuation.")
		return
	}
	s := &upSession{id: ulid(), state: random(""), nonce: random(""), provider: n, kind: kind, contID: id}
	e.mu.Lock()
	if g := e.grants[id]; kind == "continue_authorization_grant" && g != nil && e.opts.ForwardLoginHint {
		s.loginHint = g.loginHint
	}
	e.upSessions[s.id] = s
	e.mu.Unlock()
	setCookie(w, "upstream-oauth2-sessions", s.id)
	v := url.Values{
		"client_id": {upstreamClientID(n)}, "redirect_uri": {e.callbackURL(n)},
		"response_type": {"code"}, "scope": {"openid email profile"}, "state": {s.state}, "nonce": {s.nonce},
	}
	if e.opts.ResponseMode == ResponseModeFormPost {
		v.Set("response_mode", "form_post")
	}
	if s.loginHint != "" {
		v.Set("login_hint", s.loginHint)
	}
	for k, x := range e.opts.AdditionalAuthorizationParameters {
		v.Set(k, x)
	}
	redirect(w, http.StatusSeeOther, e.UpstreamURL+"/api/oidc/auth?"+v.Encode())
}

func (e *Emulator) upstreamSession(r *http.Request) *upSession {
	id := cookie(r, "upstream-oauth2-sessions")
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.upSessions[id]
}

// upstreamCallback is /upstream/callback/{id}
// (crates/handlers/src/upstream_oauth2/callback.rs): GET for response_mode
// query, POST for form_post; a cross-site POST without the session cookie is
// re-posted to itself once (handler(), did_mas_repost_to_itself).
func (e *Emulator) upstreamCallback(w http.ResponseWriter, r *http.Request) {
	n := e.providerIndex(r.PathValue("provider"))
	if n == 0 {
		errorPage(w, http.StatusNotFound, "Unknown provider", "")
		return
	}
	if err := r.ParseForm(); err != nil {
		errorPage(w, http.StatusBadRequest, "Invalid upstream callback", "")
		return
	}
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		q = r.PostForm
	}
	if len(q) == 0 {
		errorPage(w, http.StatusBadRequest, "Invalid upstream callback", "Missing parameters.")
		return
	}
	switch {
	case e.opts.ResponseMode == ResponseModeFormPost && r.Method == http.MethodPost:
		if cookie(r, "upstream-oauth2-sessions") == "" && q.Get("did_mas_repost_to_itself") == "" {
			p := []field{{Name: "did_mas_repost_to_itself", Value: "true"}}
			for k, vs := range q {
				for _, v := range vs {
					p = append(p, field{Name: k, Value: v})
				}
			}
			renderMAS(w, http.StatusOK, "form_post", formPostView{Params: p})
			return
		}
	case e.opts.ResponseMode == ResponseModeQuery && r.Method == http.MethodGet:
	default:
		errorPage(w, http.StatusBadRequest, "Invalid response mode", "Expected response_mode "+e.opts.ResponseMode+".")
		return
	}
	s := e.upstreamSession(r)
	if s == nil || q.Get("state") != s.state || s.provider != n {
		errorPage(w, http.StatusBadRequest, "Invalid upstream callback", "No matching upstream session (cookie or state).")
		return
	}
	if code := q.Get("error"); code != "" {
		errorPage(w, http.StatusBadRequest, "Upstream error", "The identity provider answered "+code+".")
		return
	}
	// MAS exchanges the code at the provider's token endpoint, server to
	// server (crates/handlers/src/upstream_oauth2/callback.rs), and checks
	// the ID token's nonce.
	ctx, cancel := ctxTimeout(r)
	claims, err := e.exchangeUpstream(ctx, n, q.Get("code"))
	cancel()
	if err != nil || claims.Nonce != s.nonce {
		msg := "The provider's code was refused."
		if err != nil {
			msg = "The provider's token endpoint answered " + err.Error() + "."
		}
		errorPage(w, http.StatusInternalServerError, "Upstream error", msg)
		return
	}
	e.mu.Lock()
	l := e.linkOf(n, claims)
	l.upSession = s.id
	s.linkID = l.id
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, "/upstream/link/"+l.id)
}

// linkOf returns the link of a provider subject at provider n, creating it,
// with the provider's latest claims (mu held).
func (e *Emulator) linkOf(n int, c upClaims) *link {
	sub := strconv.Itoa(n) + "|" + c.Sub
	lid, ok := e.linkBySub[sub]
	if !ok {
		lid = ulid()
		e.links[lid] = &link{id: lid, sub: sub, provider: n}
		e.linkBySub[sub] = lid
	}
	l := e.links[lid]
	l.email, l.localpart, l.name = c.Email, c.PreferredUsername, c.Name
	return l
}

func (e *Emulator) linkFor(r *http.Request) (*link, *upSession) {
	s := e.upstreamSession(r)
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.links[r.PathValue("id")]
	if s == nil || l == nil || s.linkID != l.id || s.consumed {
		return nil, nil
	}
	return l, s
}

func (e *Emulator) continueTo(s *upSession) string { return e.next(s.kind, s.contID) }

func (e *Emulator) startSession(w http.ResponseWriter, localpart string) {
	sid := random("")
	e.mu.Lock()
	e.sessions[sid] = localpart
	e.mu.Unlock()
	setCookie(w, "session", sid)
}

func forcedOrRequired(action string) bool { return action == ImportForce || action == ImportRequire }

// registerView builds the registration page for a link
// (crates/handlers/src/upstream_oauth2/link.rs, get(), the branch for a link
// without a user while nobody is logged in): the username is suggested
// (prefilled) or forced from the claims unless the import is ignore; display
// name and email are shown unless ignored.
func (e *Emulator) registerView(w http.ResponseWriter, r *http.Request, lp *link, msg string) (registerView, string) {
	e.mu.Lock()
	l := *lp // the claims, as of now
	e.mu.Unlock()
	v := registerView{CSRF: csrfToken(w, r, "csrf"), ServerName: e.ServerName, Terms: !e.opts.NoTerms, Error: msg}
	if e.opts.LocalpartImport != ImportIgnore {
		switch {
		case l.localpart == "" && e.opts.LocalpartImport == ImportRequire:
			return v, "The identity provider sent no preferred_username, which this server requires."
		case l.localpart == "":
		case forcedOrRequired(e.opts.LocalpartImport):
			e.mu.Lock()
			taken := e.users[l.localpart] != nil
			e.mu.Unlock()
			if taken {
				// link.rs get(), its "User exists" errors: a forced localpart
				// already in use fails.
				return v, "The username " + l.localpart + " provided by the identity provider is already in use."
			}
			v.Localpart, v.ForceLocalpart = l.localpart, true
		default: // suggest: prefilled unless taken (link.rs get())
			e.mu.Lock()
			taken := e.users[l.localpart] != nil
			e.mu.Unlock()
			if !taken {
				v.Localpart = l.localpart
			}
		}
	}
	if e.opts.DisplayNameImport != ImportIgnore && l.name != "" {
		v.DisplayName, v.ForceDisplayName = l.name, forcedOrRequired(e.opts.DisplayNameImport)
	}
	if e.opts.EmailImport != ImportIgnore && l.email != "" {
		v.Email, v.ForceEmail = l.email, forcedOrRequired(e.opts.EmailImport)
	}
	return v, ""
}

// linkPage is GET /upstream/link/{id}: a linked account logs in; a new one
// gets the registration form (templates/pages/upstream_oauth2/do_register.html).
func (e *Emulator) linkPage(w http.ResponseWriter, r *http.Request) {
	l, s := e.linkFor(r)
	if l == nil {
		errorPage(w, http.StatusBadRequest, "Invalid link", "No upstream session for this link.")
		return
	}
	e.mu.Lock()
	linked := l.user
	if linked != "" {
		s.consumed = true
	}
	e.mu.Unlock()
	if linked != "" {
		e.startSession(w, linked)
		redirect(w, http.StatusSeeOther, e.continueTo(s))
		return
	}
	v, fatal := e.registerView(w, r, l, "")
	if fatal != "" {
		errorPage(w, http.StatusBadRequest, "Registration failed", fatal)
		return
	}
	renderMAS(w, http.StatusOK, "register", v)
}

// usernameRe is the register policy's localpart rule
// (policies/register/register.rego: lower-case letters, digits and ._=-/).
var usernameRe = regexp.MustCompile(`^[a-z0-9._=/-]{1,255}$`)

// linkSubmit is POST /upstream/link/{id} with action=register (link.rs,
// post()): an empty or taken username, or terms not accepted, render the
// form again with an error; otherwise a registration starts and continues at
// /register/steps/{id}/finish.
func (e *Emulator) linkSubmit(w http.ResponseWriter, r *http.Request) {
	l, s := e.linkFor(r)
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
	again := func(msg string) {
		v, fatal := e.registerView(w, r, l, msg)
		if fatal != "" {
			errorPage(w, http.StatusBadRequest, "Registration failed", fatal)
			return
		}
		renderMAS(w, http.StatusOK, "register", v)
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	e.mu.Lock()
	claims := *l
	if forcedOrRequired(e.opts.LocalpartImport) {
		username = claims.localpart
	}
	taken := e.users[username] != nil
	e.mu.Unlock()
	switch {
	case username == "":
		again("This field is required.") // link.rs post(): FieldError::Required
		return
	case taken:
		again("This username is already taken.")
		return
	case !usernameRe.MatchString(username):
		again("The username contains invalid characters.")
		return
	case !e.opts.NoTerms && r.PostFormValue("accept_terms") == "":
		again("You must accept the terms of service.") // link.rs post()
		return
	}
	shouldImport := func(action, box string) bool {
		switch action {
		case ImportForce, ImportRequire:
			return true
		case ImportSuggest:
			return r.PostFormValue(box) != ""
		}
		return false
	}
	reg := &registration{id: ulid(), linkID: claims.id, upSession: s.id, localpart: username}
	if shouldImport(e.opts.DisplayNameImport, "import_display_name") && claims.name != "" {
		reg.displayName, reg.hasDisplayName = claims.name, true
	}
	if shouldImport(e.opts.EmailImport, "import_email") {
		reg.email = claims.email
	}
	e.mu.Lock()
	e.registrations[reg.id] = reg
	e.mu.Unlock()
	setCookie(w, "user-registration-sessions", reg.id)
	redirect(w, http.StatusSeeOther, "/register/steps/"+reg.id+"/finish")
}

func (e *Emulator) registrationFor(r *http.Request) *registration {
	e.mu.Lock()
	defer e.mu.Unlock()
	reg := e.registrations[r.PathValue("id")]
	if reg == nil || reg.finished || cookie(r, "user-registration-sessions") != reg.id {
		return nil
	}
	return reg
}

// registerFinish is GET /register/steps/{id}/finish
// (crates/handlers/src/views/register/steps/finish.rs): without a display
// name it sends the browser to the display-name step (get()); then it
// creates the user, links the upstream account and continues.
func (e *Emulator) registerFinish(w http.ResponseWriter, r *http.Request) {
	reg := e.registrationFor(r)
	if reg == nil {
		errorPage(w, http.StatusBadRequest, "Invalid registration", "")
		return
	}
	e.mu.Lock()
	if !reg.hasDisplayName {
		e.mu.Unlock()
		redirect(w, http.StatusSeeOther, "/register/steps/"+reg.id+"/display-name")
		return
	}
	l := e.links[reg.linkID]
	s := e.upSessions[reg.upSession]
	if e.users[reg.localpart] != nil || l == nil || l.user != "" || s == nil || s.consumed {
		e.mu.Unlock()
		errorPage(w, http.StatusBadRequest, "Registration failed", "The username is taken or the upstream identity is already linked.")
		return
	}
	e.users[reg.localpart] = &user{localpart: reg.localpart, email: reg.email, displayName: reg.displayName}
	l.user = reg.localpart
	reg.finished, s.consumed = true, true
	e.stats.AccountsCreated++
	e.mu.Unlock()
	// ProvisionUserJob (views/register/steps/finish.rs): a job in MAS, run
	// here before the browser moves on; a failure is retried by MAS's
	// queue, here by the first device upsert (upsertDevice).
	ctx, cancel := ctxTimeout(r)
	_ = e.provisionUser(ctx, reg.localpart)
	cancel()
	e.startSession(w, reg.localpart)
	redirect(w, http.StatusSeeOther, e.continueTo(s))
}

// displayNamePage is GET /register/steps/{id}/display-name
// (templates/pages/register/steps/display_name.html).
func (e *Emulator) displayNamePage(w http.ResponseWriter, r *http.Request) {
	if e.registrationFor(r) == nil {
		errorPage(w, http.StatusBadRequest, "Invalid registration", "")
		return
	}
	renderMAS(w, http.StatusOK, "display_name", displayNameView{CSRF: csrfToken(w, r, "csrf")})
}

// displayNameSubmit is its POST (register/steps/display_name.rs, post()):
// action=set with a name of 1-255 characters, or action=skip, which uses
// the localpart.
func (e *Emulator) displayNameSubmit(w http.ResponseWriter, r *http.Request) {
	reg := e.registrationFor(r)
	if reg == nil {
		errorPage(w, http.StatusBadRequest, "Invalid registration", "")
		return
	}
	if !csrfOK(r, "csrf") {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "")
		return
	}
	var name string
	switch r.PostFormValue("action") {
	case "set":
		name = strings.TrimSpace(r.PostFormValue("display_name"))
		if name == "" || len(name) > 255 {
			renderMAS(w, http.StatusOK, "display_name", displayNameView{CSRF: csrfToken(w, r, "csrf"), Error: "This field is required."})
			return
		}
	case "skip":
		name = reg.localpart // set once at creation
	default:
		errorPage(w, http.StatusBadRequest, "Invalid action", "Expected action=set or action=skip.")
		return
	}
	e.mu.Lock()
	reg.displayName, reg.hasDisplayName = name, true
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, "/register/steps/"+reg.id+"/finish")
}

// policyPage renders templates/pages/policy_violation.html when the
// authorization grant policy refuses; it reports whether it did.
func (e *Emulator) policyPage(w http.ResponseWriter, r *http.Request, g *grant, u string) bool {
	e.mu.Lock()
	v := grantViolations(g.scope, len(e.activeSessions(u)), e.opts.SessionLimit)
	if len(v) > 0 {
		e.stats.PolicyViolations++
	}
	e.mu.Unlock()
	if len(v) == 0 {
		return false
	}
	cv := consentView{CSRF: csrfToken(w, r, "csrf"), LogoutText: "Sign out", Username: u,
		Action: []field{{Name: "kind", Value: "continue_authorization_grant"}, {Name: "id", Value: g.id}},
		Cancel: withQuery(g.redirectURI, url.Values{"error": {"access_denied"}, "state": {g.state}})}
	if len(v) == 1 && v[0].code == "too-many-sessions" {
		cv.TooManySessions, cv.NeedToRemove = true, v[0].needToRemove
	}
	renderMAS(w, http.StatusOK, "policy_violation", cv)
	return true
}

// consentPage is GET /consent/{grant} (oauth2/authorization/consent.rs).
func (e *Emulator) consentPage(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	g := e.grants[r.PathValue("grant")]
	noCSRF := e.faults.ConsentWithoutCSRF
	e.mu.Unlock()
	if g == nil || g.done {
		errorPage(w, http.StatusBadRequest, "Invalid grant", "Unknown or finished authorization grant.")
		return
	}
	u := e.sessionUser(r)
	if u == "" {
		redirect(w, http.StatusSeeOther, "/login?"+continuation("continue_authorization_grant", g.id))
		return
	}
	if e.policyPage(w, r, g, u) {
		return
	}
	cv := consentView{Heading: "Allow access to your account?", LogoutText: "Use another account",
		Action: []field{{Name: "kind", Value: "continue_authorization_grant"}, {Name: "id", Value: g.id}},
		Cancel: withQuery(g.redirectURI, url.Values{"error": {"access_denied"}, "state": {g.state}})}
	cv.CSRF = csrfToken(w, r, "csrf")
	if noCSRF {
		renderPage(w, http.StatusOK, page{Title: cv.Heading, Form: true, Button: "Continue"})
		return
	}
	renderMAS(w, http.StatusOK, "consent", cv)
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
	e.mu.Unlock()
	if g == nil || g.done {
		errorPage(w, http.StatusBadRequest, "Invalid grant", "Unknown or finished authorization grant.")
		return
	}
	if e.policyPage(w, r, g, u) {
		return
	}
	e.mu.Lock()
	if g.done {
		e.mu.Unlock()
		errorPage(w, http.StatusBadRequest, "Invalid grant", "Unknown or finished authorization grant.")
		return
	}
	g.done = true
	c := &authCode{code: random(""), grant: g, user: u, issued: e.now()}
	e.codes[c.code] = c
	e.stats.CodesIssued++
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, withQuery(g.redirectURI, url.Values{"code": {c.code}, "state": {g.state}}))
}
