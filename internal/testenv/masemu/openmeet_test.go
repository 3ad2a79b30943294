package masemu

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// platformLoginAnswer logs b in at the platform and returns the answer.
func platformLoginAnswer(t *testing.T, e *Emulator, b *browser) map[string]any {
	t.Helper()
	resp, body := b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": strings.ToUpper(email), "password": password},
		map[string]string{"x-tenant-id": tenant})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("email login: HTTP %d %s", resp.StatusCode, body)
	}
	var out map[string]any
	if err := jsonUnmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// auth.controller.ts AuthController.login, cookie-config.ts
// getOidcCookieOptions: the answer's fields and the two session cookies.
func TestOpenMeetEmailLoginAnswer(t *testing.T) {
	e, _ := start(t, Options{})
	b := newBrowser(t)
	resp, body := b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": email, "password": password},
		map[string]string{"x-tenant-id": tenant})
	if resp.StatusCode != 200 {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	var out map[string]any
	_ = jsonUnmarshal(body, &out)
	for _, k := range []string{"refreshToken", "token", "tokenExpires", "user", "sessionId"} {
		if _, ok := out[k]; !ok {
			t.Errorf("answer lacks %q: %s", k, body)
		}
	}
	cookies := map[string]*http.Cookie{}
	for _, c := range resp.Cookies() {
		cookies[c.Name] = c
	}
	sc, tc := cookies["oidc_session"], cookies["oidc_tenant"]
	if sc == nil || tc == nil || sc.Value != out["sessionId"] || tc.Value != tenant {
		t.Fatalf("cookies %v, answer %v", resp.Cookies(), out)
	}
	for _, c := range []*http.Cookie{sc, tc} {
		if c.MaxAge != 86400 || c.Path != "/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Domain != "" || c.Secure {
			t.Errorf("cookie attributes %+v", c)
		}
	}
	if n := e.PlatformSessions(tenant, email); n != 1 {
		t.Errorf("%d live platform sessions, want 1", n)
	}
}

// oidc.controller.ts OidcController.authorize, showLoginForm and
// handleEmailLogin: login_hint is compared exactly; without a user the
// email-only form, which hands a known email over to the web app; prompt=none
// gets login_required.
func TestOpenMeetAuthRules(t *testing.T) {
	e, clk := start(t, Options{})
	get := func(b *browser, mod func(url.Values)) *http.Response {
		v := url.Values{"client_id": {UpstreamClientID}, "redirect_uri": {e.MASURL + "/upstream/callback/" + Provider},
			"response_type": {"code"}, "scope": {"openid email"}, "state": {"s"}, "login_hint": {email}}
		if mod != nil {
			mod(v)
		}
		resp, _ := noFollow(t, b, http.MethodGet, e.UpstreamURL+"/api/oidc/auth?"+v.Encode(), nil)
		return resp
	}
	b := newBrowser(t)
	platformLoginAnswer(t, e, b)
	if r := get(b, nil); r.StatusCode != http.StatusFound || !strings.Contains(r.Header.Get("Location"), "code=") {
		t.Fatalf("with a session and the exact email: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	// An upper-case login_hint is another user: the email form.
	r := get(b, func(v url.Values) { v.Set("login_hint", strings.ToUpper(email)) })
	loc, _ := r.Location()
	if r.StatusCode != http.StatusFound || loc == nil || loc.Path != "/api/oidc/login" {
		t.Fatalf("login_hint in other case: %d %v", r.StatusCode, loc)
	}
	if r := get(b, func(v url.Values) { v.Set("login_hint", strings.ToUpper(email)); v.Set("prompt", "none") }); !strings.Contains(r.Header.Get("Location"), "error=login_required") {
		t.Errorf("prompt=none, other login_hint: %s", r.Header.Get("Location"))
	}
	// The form asks for an email only, pre-filled with the hint.
	_, body := b.get(e.UpstreamURL + loc.RequestURI())
	if strings.Contains(body, `type="password"`) || !strings.Contains(body, `name="email" value="`+strings.ToUpper(email)+`"`) {
		t.Fatalf("email form: %s", body)
	}
	form := url.Values{"email": {email}, "client_id": {UpstreamClientID}, "redirect_uri": {e.callbackURL(1)},
		"response_type": {"code"}, "scope": {"openid"}, "state": {"s"}}
	resp, _ := noFollow(t, b, http.MethodPost, e.UpstreamURL+"/api/oidc/login", form)
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), PlatformFrontend+"/auth/login?") {
		t.Errorf("known email: handed to %v (%d)", loc, resp.StatusCode)
	}
	form.Set("email", "nobody@openmeet.net")
	if resp, body := noFollow(t, b, http.MethodPost, e.UpstreamURL+"/api/oidc/login", form); resp.StatusCode != 200 || !strings.Contains(body, "find an account") {
		t.Errorf("unknown email: %d", resp.StatusCode)
	}
	// prompt=none with max_age: a session older than max_age is none.
	clk.add(2 * time.Hour)
	if r := get(b, func(v url.Values) { v.Set("prompt", "none"); v.Set("max_age", "3600") }); !strings.Contains(r.Header.Get("Location"), "error=login_required") {
		t.Errorf("session older than max_age: %s", r.Header.Get("Location"))
	}
	if r := get(b, func(v url.Values) { v.Set("prompt", "none") }); !strings.Contains(r.Header.Get("Location"), "code=") {
		t.Errorf("prompt=none without max_age: %s", r.Header.Get("Location"))
	}
}

// auth.controller.ts AuthController.logout: logout needs the bearer token and
// the tenant; it ends the session, after which the cookies name no session.
func TestOpenMeetLogout(t *testing.T) {
	e, clk := start(t, Options{})
	b := newBrowser(t)
	out := platformLoginAnswer(t, e, b)
	token, _ := out["token"].(string)
	logout := func(tok, ten string) int {
		resp, _ := b.postJSON(e.UpstreamURL+"/api/v1/auth/logout", map[string]string{}, map[string]string{"Authorization": "Bearer " + tok, "x-tenant-id": ten})
		return resp.StatusCode
	}
	if st := logout("not-the-token", tenant); st != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", st)
	}
	if st := logout(token, "other"); st != http.StatusUnauthorized {
		t.Errorf("wrong tenant: %d", st)
	}
	if e.PlatformSessions(tenant, email) != 1 {
		t.Fatal("no live session before logout")
	}
	if st := logout(token, tenant); st != http.StatusNoContent {
		t.Fatalf("logout: %d", st)
	}
	if n := e.PlatformSessions(tenant, email); n != 0 || e.Stats().PlatformLogouts != 1 {
		t.Errorf("after logout: %d live sessions, stats %+v", n, e.Stats())
	}
	if st := logout(token, tenant); st != http.StatusUnauthorized {
		t.Errorf("second logout: %d", st)
	}
	v := url.Values{"client_id": {UpstreamClientID}, "redirect_uri": {e.callbackURL(1)}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"s"}, "prompt": {"none"}}
	resp, _ := noFollow(t, b, http.MethodGet, e.UpstreamURL+"/api/oidc/auth?"+v.Encode(), nil)
	if !strings.Contains(resp.Header.Get("Location"), "error=login_required") {
		t.Errorf("the cookies of an ended session still identify: %s", resp.Header.Get("Location"))
	}
	// The bearer token lives 15 min.
	out = platformLoginAnswer(t, e, b)
	clk.add(16 * time.Minute)
	if st := logout(out["token"].(string), tenant); st != http.StatusUnauthorized {
		t.Errorf("expired token: %d", st)
	}
}

// oidc.controller.ts OidcController.token with app.module.ts's global
// MultiLayerThrottlerGuard: each token request counts twice against 10 per 60
// s keyed by address; the 6th in a sliding minute gets 429 and blocks the
// address for 60 s.
func TestOpenMeetTokenLimit(t *testing.T) {
	e, clk := start(t, Options{})
	b := newBrowser(t)
	post := func() int {
		resp, _ := b.post(e.UpstreamURL+"/api/oidc/token", url.Values{"grant_type": {"authorization_code"}, "code": {"nope"},
			"client_id": {UpstreamClientID}, "redirect_uri": {e.callbackURL(1)}})
		return resp.StatusCode
	}
	for i := 1; i <= 3; i++ {
		if st := post(); st != http.StatusBadRequest {
			t.Fatalf("request %d: %d", i, st)
		}
	}
	clk.add(30 * time.Second)
	for i := 4; i <= 5; i++ {
		if st := post(); st != http.StatusBadRequest {
			t.Fatalf("request %d: %d", i, st)
		}
	}
	clk.add(29 * time.Second) // 59 s after the first: all five still count
	if st := post(); st != http.StatusTooManyRequests {
		t.Fatalf("6th request in a sliding minute: %d, want 429", st)
	}
	clk.add(59 * time.Second) // the block lasts 60 s, whatever expired meanwhile
	if st := post(); st != http.StatusTooManyRequests {
		t.Fatalf("59 s into the block: %d, want 429", st)
	}
	clk.add(time.Second)
	if st := post(); st != http.StatusBadRequest {
		t.Fatalf("after the block: %d", st)
	}
	if st := e.Stats(); st.ProviderTokenRequests != 8 || st.ProviderTokenRateLimited != 2 {
		t.Errorf("stats %+v", st)
	}
	// A sliding window, not a fixed one: 5 spread requests are fine, a 6th
	// within 60 s of the first is not.
	clk.add(2 * time.Minute)
	for i := 0; i < 5; i++ {
		if st := post(); st != http.StatusBadRequest {
			t.Fatalf("spread request %d: %d", i, st)
		}
		clk.add(14 * time.Second)
	}
	if st := post(); st != http.StatusBadRequest { // 70 s after the first of these
		t.Fatalf("request 70 s after the first: %d", st)
	}
	if st := post(); st != http.StatusTooManyRequests { // 6 within the last 60 s
		t.Fatalf("6 within 60 s: %d, want 429", st)
	}
}

// oidc.service.ts OidcService.mapUserToOidcClaims: preferred_username is the
// handle, else <lower(slug)>_<lower(tenant)>; MAS creates that user
// (localpart import require, as OpenMeet's MAS).
func TestOpenMeetPreferredUsername(t *testing.T) {
	for _, tc := range []struct{ handle, want string }{{"", "openmeet-bot-acme_acme"}, {"acme-bot", "acme-bot"}} {
		e, _ := start(t, Options{LocalpartImport: ImportRequire, NoTerms: true})
		e.SetUpstreamHandle(tenant, email, tc.handle)
		b := newBrowser(t)
		platformLogin(t, e, b)
		flow(t, e, b, authorizeURL(e, clientID(t, e), nil))
		if !e.HasUser(tc.want) {
			t.Errorf("handle %q: MAS has no user %q", tc.handle, tc.want)
		}
		if st := e.Stats(); st.ProviderTokenRequests != 1 || st.ProviderTokenRateLimited != 0 {
			t.Errorf("stats %+v", st)
		}
	}
	if got := UpstreamLocalpart("OpenMeet-Bot-ACME", "ACME"); got != "openmeet-bot-acme_acme" {
		t.Errorf("UpstreamLocalpart = %q", got)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// MAS as OpenMeet's deployment configures it: login_hint forwarded and
// prompt=none, max_age=3600 sent upstream (mas-config.gomplate.yaml,
// upstream_oauth2.providers: forward_login_hint and
// additional_authorization_parameters);
// without a platform session the provider answers login_required.
func TestOpenMeetMASUpstreamParameters(t *testing.T) {
	e, _ := start(t, OpenMeetOptions())
	b := newBrowser(t)
	u := authorizeURL(e, clientID(t, e), nil)
	var resp *http.Response
	for i := 0; i < 4; i++ {
		resp, _ = noFollow(t, b, http.MethodGet, u, nil)
		loc, err := resp.Location()
		if err != nil {
			t.Fatalf("hop %d: HTTP %d without a redirect", i, resp.StatusCode)
		}
		u = loc.String()
		if strings.HasPrefix(u, "/") {
			u = e.MASURL + u
		}
		if strings.HasPrefix(u, e.UpstreamURL) {
			break
		}
	}
	pu, _ := url.Parse(u)
	q := pu.Query()
	if pu.Path != "/api/oidc/auth" || q.Get("prompt") != "none" || q.Get("max_age") != "3600" || q.Get("login_hint") != email ||
		q.Get("client_id") != UpstreamClientID {
		t.Fatalf("upstream authorization request %s", u)
	}
	resp, _ = noFollow(t, b, http.MethodGet, u, nil)
	if loc, _ := resp.Location(); loc == nil || !strings.HasPrefix(loc.String(), e.callbackURL(1)) || loc.Query().Get("error") != "login_required" {
		t.Fatalf("without a platform session: %d %v", resp.StatusCode, loc)
	}
}
