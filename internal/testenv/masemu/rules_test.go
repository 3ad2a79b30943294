package masemu

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// noFollow performs one request without following redirects, with b's jar.
func noFollow(t *testing.T, b *browser, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	hc := *b.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	nb := &browser{t: t, hc: &hc}
	if method == http.MethodPost {
		return nb.post(u, form)
	}
	return nb.get(u)
}

// views/login.rs, get(): /login is a page unless passwords are off and there
// is exactly one provider.
func TestLoginPageRules(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      Options
		page      bool
		password  bool
		providers int
	}{
		{"default: passwords on, one provider", Options{}, true, true, 1},
		{"passwords off, one provider", Options{PasswordsDisabled: true}, false, false, 1},
		{"passwords off, two providers", Options{PasswordsDisabled: true, Providers: 2}, true, false, 2},
		{"passwords on, two providers", Options{Providers: 2}, true, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := start(t, tc.opts)
			b := newBrowser(t)
			resp, body := noFollow(t, b, http.MethodGet, authorizeURL(e, clientID(t, e), nil), nil)
			loc, _ := resp.Location()
			resp, body = noFollow(t, b, http.MethodGet, e.MASURL+loc.RequestURI(), nil)
			if !tc.page {
				loc, _ := resp.Location()
				if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.Path, "/upstream/authorize/"+Provider) {
					t.Fatalf("want a redirect to the provider, got %d %v", resp.StatusCode, loc)
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("want the login page, got %d", resp.StatusCode)
			}
			if got := strings.Contains(body, `type="password"`); got != tc.password {
				t.Errorf("password form shown = %v, want %v", got, tc.password)
			}
			if n := len(providerLinkRe.FindAllString(body, -1)); n != tc.providers {
				t.Errorf("%d provider links, want %d", n, tc.providers)
			}
			for i := 1; i <= tc.providers; i++ {
				if !strings.Contains(body, "/upstream/authorize/"+ProviderID(i)+"?") || !strings.Contains(body, "Continue with "+ProviderName(i)+"<") {
					t.Errorf("no link for provider %d", i)
				}
			}
		})
	}
	// The password form logs a MAS user with a password in.
	e, _ := start(t, Options{})
	e.SetMASPassword("alice", "alice-pw")
	b := newBrowser(t)
	resp, body := b.get(authorizeURL(e, clientID(t, e), nil))
	resp, _ = noFollow(t, b, http.MethodPost, resp.Request.URL.String(), url.Values{"csrf": {csrfOf(body)}, "username": {"alice"}, "password": {"alice-pw"}})
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.Path, "/consent/") {
		t.Fatalf("password login: %d %v", resp.StatusCode, loc)
	}
}

// upstream_oauth2/link.rs, get() (a link without a user, nobody logged in),
// and do_register.html: the username field by localpart import action.
func TestLocalpartImportModes(t *testing.T) {
	for _, tc := range []struct {
		mode                  string
		claim                 string
		username, prefilled   bool
		readonlyMXID, refused bool
	}{
		{ImportIgnore, localpart, true, false, false, false},
		{ImportSuggest, localpart, true, true, false, false},
		{ImportForce, localpart, false, false, true, false},
		{ImportRequire, localpart, false, false, true, false},
		{ImportRequire, "", false, false, false, true},
	} {
		t.Run(tc.mode+"/"+tc.claim, func(t *testing.T) {
			e, _ := start(t, Options{LocalpartImport: tc.mode})
			e.SetUpstreamLocalpart(tenant, email, tc.claim)
			b := newBrowser(t)
			platformLogin(t, e, b)
			resp, body := b.get(authorizeURL(e, clientID(t, e), nil))
			resp, body = viaLogin(t, e, b, resp, body)
			if tc.refused {
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("a required localpart missing: HTTP %d", resp.StatusCode)
				}
				return
			}
			if got := strings.Contains(body, `name="username"`); got != tc.username {
				t.Errorf("username field = %v, want %v", got, tc.username)
			}
			if got := strings.Contains(body, `value="`+localpart+`" data-choose-username`); got != tc.prefilled {
				t.Errorf("prefilled = %v, want %v", got, tc.prefilled)
			}
			if got := strings.Contains(body, `name="mxid"`) && strings.Contains(body, "readonly"); got != tc.readonlyMXID {
				t.Errorf("readonly mxid = %v, want %v", got, tc.readonlyMXID)
			}
			// With a forced localpart the username a client posts is ignored.
			form := url.Values{"csrf": {csrfOf(body)}, "action": {"register"}, "accept_terms": {"on"}}
			if !tc.username {
				form.Set("username", "someone-else")
			} else {
				form.Set("username", localpart)
			}
			resp, body = b.post(resp.Request.URL.String(), form)
			resp, _ = browse(t, e, b, resp, body)
			if resp.StatusCode != http.StatusSeeOther || !e.HasUser(localpart) {
				t.Fatalf("registration did not finish: %d, user %v", resp.StatusCode, e.HasUser(localpart))
			}
		})
	}
}

// register/steps/finish.rs get() and display_name.rs post(): without an
// imported display name the display-name step comes; set or skip.
func TestDisplayNameStep(t *testing.T) {
	reach := func(t *testing.T, opts Options) (*Emulator, *browser, *http.Response, string) {
		e, _ := start(t, opts)
		b := newBrowser(t)
		platformLogin(t, e, b)
		resp, body := b.get(authorizeURL(e, clientID(t, e), nil))
		resp, body = viaLogin(t, e, b, resp, body)
		form := url.Values{"csrf": {csrfOf(body)}, "action": {"register"}, "accept_terms": {"on"}, "username": {localpart}}
		if strings.Contains(body, "import_display_name") {
			form.Set("import_display_name", "on")
		}
		resp, body = b.post(resp.Request.URL.String(), form)
		return e, b, resp, body
	}
	t.Run("not imported: set", func(t *testing.T) {
		e, b, resp, body := reach(t, Options{})
		if !strings.HasSuffix(resp.Request.URL.Path, "/display-name") || !strings.Contains(body, `value="skip"`) {
			t.Fatalf("no display-name step: %s", resp.Request.URL.Path)
		}
		here := resp.Request.URL.String()
		if resp, body := b.post(here, url.Values{"csrf": {csrfOf(body)}, "action": {"set"}, "display_name": {"  "}}); resp.StatusCode != 200 || !strings.Contains(body, "required") {
			t.Errorf("empty display name: %d", resp.StatusCode)
		}
		resp, _ = noFollow(t, b, http.MethodPost, here, url.Values{"csrf": {csrfOf(body)}, "action": {"set"}, "display_name": {"Acme bot"}})
		resp, body = b.get(e.MASURL + resp.Header.Get("Location"))
		browse(t, e, b, resp, body)
		if got := e.UserDisplayName(localpart); got != "Acme bot" {
			t.Errorf("display name %q", got)
		}
	})
	t.Run("not imported: skip uses the localpart", func(t *testing.T) {
		e, b, resp, body := reach(t, Options{})
		resp, body = b.post(resp.Request.URL.String(), url.Values{"csrf": {csrfOf(body)}, "action": {"skip"}})
		browse(t, e, b, resp, body)
		if got := e.UserDisplayName(localpart); got != localpart {
			t.Errorf("display name %q, want the localpart", got)
		}
	})
	t.Run("imported: no step", func(t *testing.T) {
		e, b, resp, body := reach(t, Options{DisplayNameImport: ImportSuggest})
		if strings.Contains(resp.Request.URL.Path, "display-name") {
			t.Fatal("display-name step although the name was imported")
		}
		browse(t, e, b, resp, body)
		if got := e.UserDisplayName(localpart); got != "Bot of "+tenant {
			t.Errorf("display name %q", got)
		}
	})
}

// authorization_grant.rego: scopes, and session_limit, refused at consent
// with the policy violation page, whose only POST form is logout (which
// resumes the grant: the loop a naive client falls into).
func TestGrantPolicy(t *testing.T) {
	for _, tc := range []struct {
		name, scope string
	}{
		{"profile", "openid profile urn:matrix:org.matrix.msc2967.client:api:*"},
		{"mixed", "openid urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:device:" + deviceID},
		{"two devices", "openid urn:matrix:client:api:* urn:matrix:client:device:AAAAAAAAAA urn:matrix:client:device:BBBBBBBBBB"},
		{"device without api", "openid urn:matrix:client:device:" + deviceID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := start(t, Options{})
			b := newBrowser(t)
			platformLogin(t, e, b)
			resp, body := b.get(authorizeURL(e, clientID(t, e), func(v url.Values) { v.Set("scope", tc.scope) }))
			resp, body = browse(t, e, b, resp, body)
			if resp.StatusCode != 200 || !strings.Contains(body, "denied by the policy") || !strings.Contains(body, `action="/logout"`) {
				t.Fatalf("want the policy violation page: %d %s", resp.StatusCode, resp.Request.URL.Path)
			}
			if strings.Count(body, `method="POST"`) != 1 {
				t.Error("the policy page has a POST form besides logout")
			}
		})
	}
	e, _ := start(t, Options{SessionLimit: 2})
	client := clientID(t, e)
	for i := 0; i < 2; i++ {
		q := flow(t, e, newBrowser(t), authorizeURL(e, client, nil))
		if st, _ := tokenReq(t, e, codeGrant(client, q.Get("code"))); st != 200 {
			t.Fatal(st)
		}
	}
	if n := len(e.ActiveSessions(localpart)); n != 2 {
		t.Fatalf("%d sessions", n)
	}
	b := newBrowser(t)
	platformLogin(t, e, b)
	resp, body := b.get(authorizeURL(e, client, nil))
	resp, body = browse(t, e, b, resp, body)
	if !strings.Contains(body, "Device limit reached") || !strings.Contains(body, "remove 1 of") {
		t.Fatalf("want too-many-sessions: %d %s", resp.StatusCode, body)
	}
	// Logging out resumes the grant: the login page, then the same refusal.
	resp, body = b.post(e.MASURL+"/logout", url.Values{"csrf": {csrfOf(body)}, "kind": {"continue_authorization_grant"},
		"id": {strings.TrimPrefix(resp.Request.URL.Path, "/consent/")}})
	resp, body = browse(t, e, b, resp, body)
	if !strings.Contains(body, "Device limit reached") {
		t.Errorf("after logout: %d %s", resp.StatusCode, resp.Request.URL.Path)
	}
}

// token.rs refresh_token_grant (refresh revokes the previous access token)
// and revoke.rs (revocation ends the session; unknown tokens are a 200;
// another client's token is refused).
func TestRefreshRevokeAndSessions(t *testing.T) {
	e, _ := start(t, Options{})
	client := clientID(t, e)
	_, tok := tokenReq(t, e, codeGrant(client, flow(t, e, newBrowser(t), authorizeURL(e, client, nil)).Get("code")))
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)
	st, r1 := tokenReq(t, e, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {client}})
	if st != 200 {
		t.Fatal(st)
	}
	if front(t, e, at) != http.StatusUnauthorized {
		t.Error("the access token a refresh replaced still works")
	}
	if front(t, e, r1["access_token"].(string)) != 200 {
		t.Error("the new access token is refused")
	}
	if n := len(e.ActiveSessions(localpart)); n != 1 {
		t.Errorf("a refresh changed the session count to %d", n)
	}
	revoke := func(client, token string) int {
		resp, _ := newBrowser(t).post(e.MASURL+"/oauth2/revoke", url.Values{"client_id": {client}, "token": {token}})
		return resp.StatusCode
	}
	if st := revoke(clientID2(t, e), r1["refresh_token"].(string)); st != http.StatusUnauthorized {
		t.Errorf("revocation by another client: %d", st)
	}
	if st := revoke(client, "mar_unknown"); st != 200 {
		t.Errorf("unknown token: %d", st)
	}
	if st := revoke(client, r1["refresh_token"].(string)); st != 200 {
		t.Fatalf("revoke: %d", st)
	}
	if n := len(e.ActiveSessions(localpart)); n != 0 {
		t.Errorf("%d sessions after revocation", n)
	}
	if front(t, e, r1["access_token"].(string)) != http.StatusUnauthorized {
		t.Error("the access token of a revoked session still works")
	}
	if st, _ := tokenReq(t, e, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r1["refresh_token"].(string)}, "client_id": {client}}); st != 400 {
		t.Errorf("refresh of a revoked session: %d", st)
	}
}

// oauth2/authorization/mod.rs, get(): prompt=none is refused even with a
// session.
func TestPromptNoneAlwaysLoginRequired(t *testing.T) {
	e, _ := start(t, Options{})
	client := clientID(t, e)
	b := newBrowser(t)
	flow(t, e, b, authorizeURL(e, client, nil)) // b has a MAS session now
	resp, _ := noFollow(t, b, http.MethodGet, authorizeURL(e, client, func(v url.Values) { v.Set("prompt", "none") }), nil)
	if loc, _ := resp.Location(); loc == nil || loc.Query().Get("error") != "login_required" {
		t.Fatalf("prompt=none with a session: %d %v", resp.StatusCode, loc)
	}
}

// client_registration.rego, is_localhost and valid_native_redirector:
// loopback is exactly localhost, 127.0.0.1 and [::1]; a private-use scheme
// has no authority.
func TestRegistrationLoopbackRule(t *testing.T) {
	e, _ := start(t, Options{})
	for ru, ok := range map[string]bool{
		"http://localhost:9005/cb": true, "http://127.0.0.1:9005/cb": true, "http://[::1]:9005/cb": true,
		"http://127.0.0.2:9005/cb": false, "http://127.1.2.3/cb": false, "http://localhost.example/cb": false,
		"com.github:/callback": true, "com.github://host/callback": false, "org.example:/callback": false,
	} {
		m := nativeClient()
		m["redirect_uris"] = []string{ru}
		st, out := registerClient(t, e, m)
		if (st == http.StatusCreated) != ok {
			t.Errorf("%s: %d %v, want accepted=%v", ru, st, out["error"], ok)
		}
	}
}

// upstream_oauth2/authorize.rs get(): no prompt, login_hint only with
// forward_login_hint; callback.rs handler(): response_mode form_post, and
// MAS's re-post to itself when the cross-site POST came without its cookie.
func TestUpstreamProviderDefaults(t *testing.T) {
	upstreamURL := func(t *testing.T, opts Options) *url.URL {
		e, _ := start(t, opts)
		b := newBrowser(t)
		resp, body := b.get(authorizeURL(e, clientID(t, e), nil))
		m := providerLinkRe.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no login page: %d", resp.StatusCode)
		}
		resp, _ = noFollow(t, b, http.MethodGet, e.MASURL+strings.ReplaceAll(m[1], "&amp;", "&"), nil)
		loc, _ := resp.Location()
		if loc == nil {
			t.Fatal("no redirect upstream")
		}
		return loc
	}
	u := upstreamURL(t, Options{})
	if u.Query().Has("prompt") || u.Query().Has("login_hint") || u.Query().Has("response_mode") {
		t.Errorf("default upstream request: %v", u.Query())
	}
	u = upstreamURL(t, Options{ForwardLoginHint: true, ResponseMode: ResponseModeFormPost})
	if u.Query().Get("login_hint") != email || u.Query().Get("response_mode") != "form_post" {
		t.Errorf("forward_login_hint + form_post: %v", u.Query())
	}

	e, _ := start(t, Options{ResponseMode: ResponseModeFormPost})
	b := newBrowser(t)
	platformLogin(t, e, b)
	resp, body := b.get(authorizeURL(e, clientID(t, e), nil))
	resp, body = viaLogin(t, e, b, resp, body)
	if !strings.Contains(body, ".submit()") || !strings.Contains(body, `action="`+e.MASURL+`/upstream/callback/`) {
		t.Fatalf("want the provider's auto-posting form: %d %s", resp.StatusCode, body)
	}
	form := url.Values{}
	for _, m := range regexpHidden.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], m[2])
	}
	// Posted without MAS's cookie (a cross-site POST): MAS posts it to itself.
	resp, body = newBrowser(t).post(e.MASURL+"/upstream/callback/"+Provider, form)
	if !strings.Contains(body, "did_mas_repost_to_itself") {
		t.Errorf("no re-post to itself: %d", resp.StatusCode)
	}
	// With the cookie: the link page.
	resp, _ = b.post(e.MASURL+"/upstream/callback/"+Provider, form)
	if !strings.Contains(resp.Request.URL.Path, "/upstream/link/") {
		t.Errorf("form_post callback: %d %s", resp.StatusCode, resp.Request.URL.Path)
	}
	// A GET callback is refused when the provider answers with form_post.
	if resp, _ := b.get(e.MASURL + "/upstream/callback/" + Provider + "?" + form.Encode()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET callback in form_post mode: %d", resp.StatusCode)
	}
}

// compat/login.rs, user_password_login (and token_login) through
// finish_sessions_to_replace_device: a compat login on a device ends the
// earlier compat session of that device, so repeated logins do not pile up.
func TestCompatSessionsPerDevice(t *testing.T) {
	e, _ := start(t, Options{})
	e.SetMASPassword(localpart, "masp")
	login := func() {
		resp, _ := newBrowser(t).postJSON(e.HomeserverURL+"/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
			"identifier": map[string]string{"type": "m.id.user", "user": localpart}, "password": "masp", "device_id": deviceID}, nil)
		if resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode)
		}
	}
	login()
	login()
	if n := len(e.ActiveSessions(localpart)); n != 1 {
		t.Errorf("%d compat sessions on one device", n)
	}
}

var regexpHidden = regexp.MustCompile(`type="hidden" name="([^"]+)" value="([^"]*)"`)
