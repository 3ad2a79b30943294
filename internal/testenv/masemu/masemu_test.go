package masemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	redirectURI = "http://localhost:9005/auth/matrix/callback"
	clientURI   = "https://github.com/mxprobe/mxprobe"
	tenant      = "acme"
	email       = "bot-acme@openmeet.net"
	password    = "pw-acme"
	slug        = "openmeet-bot-acme"
	localpart   = slug + "_" + tenant // the provider's preferred_username
	deviceID    = "MXPROBEDEV01"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func start(t *testing.T, opts Options) (*Emulator, *clock) {
	t.Helper()
	c := &clock{t: time.Now()}
	if opts.Now == nil {
		opts.Now = c.now
	}
	e, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.AddUpstreamUser(tenant, email, password, slug)
	return e, c
}

// browser is a cookie-keeping client that follows redirects until it
// reaches the redirect URI (not fetched).
type browser struct {
	t  *testing.T
	hc *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), "http://localhost:9005/") || strings.HasPrefix(req.URL.String(), "http://localhost/") {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	t.Cleanup(hc.CloseIdleConnections)
	return &browser{t: t, hc: hc}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (b *browser) get(u string) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) post(u string, form url.Values) (*http.Response, string) {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func (b *browser) postJSON(u string, v any, hdr map[string]string) (*http.Response, string) {
	body, _ := json.Marshal(v)
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return b.do(req)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(body string) string {
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

func registerClient(t *testing.T, e *Emulator, meta map[string]any) (int, map[string]any) {
	t.Helper()
	resp, body := newBrowser(t).postJSON(e.MASURL+"/oauth2/registration", meta, nil)
	var out map[string]any
	_ = json.Unmarshal([]byte(body), &out)
	return resp.StatusCode, out
}

func nativeClient() map[string]any {
	return map[string]any{
		"client_name": "test", "client_uri": clientURI, "redirect_uris": []string{redirectURI},
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
		"token_endpoint_auth_method": "none", "application_type": "native",
	}
}

func clientID(t *testing.T, e *Emulator) string {
	t.Helper()
	st, out := registerClient(t, e, nativeClient())
	if st != http.StatusCreated {
		t.Fatalf("registration: %d %v", st, out)
	}
	return out["client_id"].(string)
}

func challenge(v string) string {
	s := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

const verifier = "verifier-verifier-verifier-verifier-verifier-0"

func authorizeURL(e *Emulator, client string, mod func(url.Values)) string {
	v := url.Values{
		"response_type": {"code"}, "client_id": {client}, "redirect_uri": {redirectURI},
		"scope": {"openid email urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:" + deviceID},
		"state": {"st-1"}, "nonce": {"n-1"}, "code_challenge": {challenge(verifier)}, "code_challenge_method": {"S256"},
		"login_hint": {email},
	}
	if mod != nil {
		mod(v)
	}
	return e.MASURL + "/authorize?" + v.Encode()
}

var (
	providerLinkRe = regexp.MustCompile(`href="(/upstream/authorize/[^"]+)"`)
	actionRe       = regexp.MustCompile(`name="action" value="([a-z]+)"`)
)

// browse acts on MAS pages as a person would (follow the provider link of
// the login page, fill the registration form, skip the display name, agree
// to consent) until a redirect leaves the pages or a page is none of those.
func browse(t *testing.T, e *Emulator, b *browser, resp *http.Response, body string) (*http.Response, string) {
	t.Helper()
	for i := 0; i < 10 && resp.StatusCode == 200; i++ {
		here := resp.Request.URL.String()
		switch {
		case providerLinkRe.MatchString(body):
			resp, body = b.get(e.MASURL + html.UnescapeString(providerLinkRe.FindStringSubmatch(body)[1]))
		case strings.Contains(body, `value="register"`):
			form := url.Values{"csrf": {csrfOf(body)}, "action": {"register"}, "accept_terms": {"on"}}
			if strings.Contains(body, `name="username"`) && !strings.Contains(body, `name="username" id="username" class="cpd-text-control" type="text" autocomplete="username" value="`+localpart) {
				form.Set("username", localpart)
			} else {
				form.Set("username", localpart)
			}
			resp, body = b.post(here, form)
		case strings.Contains(body, `value="skip"`):
			resp, body = b.post(here, url.Values{"csrf": {csrfOf(body)}, "action": {"skip"}})
		case strings.Contains(resp.Request.URL.Path, "/consent/") && !actionRe.MatchString(body) && csrfOf(body) != "" &&
			!strings.Contains(body, "denied by the policy") && !strings.Contains(body, "Device limit"):
			resp, body = b.post(here, url.Values{"csrf": {csrfOf(body)}})
		case strings.Contains(resp.Request.URL.Path, "/complete-compat-sso/"):
			resp, body = b.post(here, url.Values{"csrf": {csrfOf(body)}})
		default:
			return resp, body
		}
	}
	return resp, body
}

// viaLogin follows the login page's (first) provider link, as a browser
// user clicking "Continue with OpenMeet".
func viaLogin(t *testing.T, e *Emulator, b *browser, resp *http.Response, body string) (*http.Response, string) {
	t.Helper()
	if !strings.HasSuffix(resp.Request.URL.Path, "/login") {
		return resp, body
	}
	m := providerLinkRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("login page without a provider link: %s", body)
	}
	return b.get(e.MASURL + html.UnescapeString(m[1]))
}

// platformLogin logs the browser in at the platform.
func platformLogin(t *testing.T, e *Emulator, b *browser) {
	t.Helper()
	resp, _ := b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": email, "password": password},
		map[string]string{"x-tenant-id": tenant})
	if resp.StatusCode != 200 {
		t.Fatalf("platform login: %d", resp.StatusCode)
	}
}

// flow runs a login up to the redirect to the redirect URI and returns its
// query.
func flow(t *testing.T, e *Emulator, b *browser, authURL string) url.Values {
	t.Helper()
	platformLogin(t, e, b)
	resp, body := b.get(authURL)
	resp, body = browse(t, e, b, resp, body)
	if resp.StatusCode/100 != 3 {
		t.Fatalf("flow ended with HTTP %d at %s: %s", resp.StatusCode, resp.Request.URL.Path, body)
	}
	loc, _ := resp.Location()
	return loc.Query()
}

func tokenReq(t *testing.T, e *Emulator, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, body := newBrowser(t).post(e.MASURL+"/oauth2/token", form)
	var out map[string]any
	_ = json.Unmarshal([]byte(body), &out)
	return resp.StatusCode, out
}

func codeGrant(client, code string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"client_id": {client}, "code_verifier": {verifier}}
}

func TestRegistrationPolicy(t *testing.T) {
	e, _ := start(t, Options{})
	mod := func(f func(m map[string]any)) map[string]any { m := nativeClient(); f(m); return m }
	for _, tc := range []struct {
		name string
		meta map[string]any
		want string
	}{
		{"no client_uri", mod(func(m map[string]any) { delete(m, "client_uri") }), "invalid_client_metadata"},
		{"http client_uri", mod(func(m map[string]any) { m["client_uri"] = "http://example.org/" }), "invalid_client_metadata"},
		{"localhost client_uri", mod(func(m map[string]any) { m["client_uri"] = "https://localhost/" }), "invalid_client_metadata"},
		{"public suffix client_uri", mod(func(m map[string]any) { m["client_uri"] = "https://github.io/" }), "invalid_client_metadata"},
		{"tos_uri on another host", mod(func(m map[string]any) { m["tos_uri"] = "https://other.example/tos" }), "invalid_client_metadata"},
		{"web client with loopback redirect", mod(func(m map[string]any) { m["application_type"] = "web" }), "invalid_redirect_uri"},
		{"web client redirect on another host", mod(func(m map[string]any) {
			m["application_type"], m["client_uri"], m["redirect_uris"] = "web", "https://example.org/", []string{"https://evil.example.net/cb"}
		}), "invalid_redirect_uri"},
		{"web client http redirect", mod(func(m map[string]any) {
			m["application_type"], m["client_uri"], m["redirect_uris"] = "web", "https://example.org/", []string{"http://example.org/cb"}
		}), "invalid_redirect_uri"},
		{"native non-loopback http redirect", mod(func(m map[string]any) { m["redirect_uris"] = []string{"http://example.org/cb"} }), "invalid_redirect_uri"},
		{"fragment", mod(func(m map[string]any) { m["redirect_uris"] = []string{redirectURI + "#x"} }), "invalid_redirect_uri"},
		{"no redirect uris", mod(func(m map[string]any) { delete(m, "redirect_uris") }), "invalid_redirect_uri"},
		{"confidential client", mod(func(m map[string]any) { m["token_endpoint_auth_method"] = "client_secret_basic" }), "invalid_client_metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, out := registerClient(t, e, tc.meta)
			if st != http.StatusBadRequest || out["error"] != tc.want {
				t.Fatalf("got %d %v, want 400 %s", st, out, tc.want)
			}
		})
	}
	// Accepted: native loopback, private-use scheme, web on the client host.
	for _, ok := range []map[string]any{
		nativeClient(),
		mod(func(m map[string]any) { m["redirect_uris"] = []string{"com.github:/callback"} }),
		mod(func(m map[string]any) {
			m["application_type"], m["client_uri"], m["redirect_uris"] = "web", "https://example.org/", []string{"https://bots.example.org/cb"}
		}),
	} {
		if st, out := registerClient(t, e, ok); st != http.StatusCreated {
			t.Errorf("refused %v: %v", ok, out)
		}
	}
	_, a := registerClient(t, e, nativeClient())
	_, b := registerClient(t, e, nativeClient())
	if a["client_id"] != b["client_id"] {
		t.Error("identical registrations got different client ids")
	}
}

func TestAuthorizeRules(t *testing.T) {
	e, _ := start(t, Options{})
	client := clientID(t, e)
	b := newBrowser(t)
	// Unknown client or redirect URI: a 400 page, never a redirect.
	for name, u := range map[string]string{
		"unknown client":         authorizeURL(e, "nope", nil),
		"unregistered redirect":  authorizeURL(e, client, func(v url.Values) { v.Set("redirect_uri", "http://localhost:9005/other") }),
		"redirect with fragment": authorizeURL(e, client, func(v url.Values) { v.Set("redirect_uri", redirectURI+"#f") }),
	} {
		resp, _ := b.get(u)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("%s: HTTP %d location %q, want a 400 page", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	// Later errors redirect to the client with error and state.
	for name, tc := range map[string]struct {
		mod  func(url.Values)
		code string
	}{
		"token response type": {func(v url.Values) { v.Set("response_type", "token") }, "unsupported_response_type"},
		"prompt none":         {func(v url.Values) { v.Set("prompt", "none") }, "login_required"},
	} {
		resp, _ := b.get(authorizeURL(e, client, tc.mod))
		loc, _ := resp.Location()
		if resp.StatusCode != http.StatusSeeOther || loc == nil || loc.Query().Get("error") != tc.code || loc.Query().Get("state") != "st-1" {
			t.Errorf("%s: HTTP %d %v, want redirect error=%s", name, resp.StatusCode, loc, tc.code)
		}
	}
}

func TestFlowRulesCookiesCSRFDevice(t *testing.T) {
	e, _ := start(t, Options{})
	client := clientID(t, e)

	// The full flow works (first login: account creation, terms).
	q := flow(t, e, newBrowser(t), authorizeURL(e, client, nil))
	if q.Get("code") == "" || q.Get("state") != "st-1" {
		t.Fatalf("flow: %v", q)
	}

	// A device id under 10 characters is refused at consent by the policy.
	b := newBrowser(t)
	platformLogin(t, e, b)
	resp, body := b.get(authorizeURL(e, client, func(v url.Values) {
		v.Set("scope", "openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:SHORT")
	}))
	resp, body = viaLogin(t, e, b, resp, body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Request.URL.Path, "/consent/") || !strings.Contains(body, "denied by the policy") {
		t.Errorf("short device id: HTTP %d at %s", resp.StatusCode, resp.Request.URL.Path)
	}

	// Consent without csrf, or with a wrong one: refused.
	b = newBrowser(t)
	platformLogin(t, e, b)
	resp, body = b.get(authorizeURL(e, client, nil))
	resp, body = viaLogin(t, e, b, resp, body)
	if resp.StatusCode != 200 || !strings.Contains(resp.Request.URL.Path, "/consent/") {
		t.Fatalf("second login should land on consent: %d %s", resp.StatusCode, resp.Request.URL.Path)
	}
	consent := resp.Request.URL.String()
	for name, form := range map[string]url.Values{"missing": {}, "wrong": {"csrf": {"forged"}}} {
		if resp, _ := b.post(consent, form); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("consent csrf %s: HTTP %d", name, resp.StatusCode)
		}
	}
	// The right csrf but no cookie (another browser): refused.
	other := newBrowser(t)
	if resp, _ := other.post(consent, url.Values{"csrf": {csrfOf(body)}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("consent from a browser without the session cookie: HTTP %d", resp.StatusCode)
	}
	if resp, _ := b.post(consent, url.Values{"csrf": {csrfOf(body)}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("consent with csrf: HTTP %d", resp.StatusCode)
	}

	// The upstream callback needs the upstream session cookie.
	if resp, _ := newBrowser(t).get(e.MASURL + "/upstream/callback/" + Provider + "?code=x&state=y"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("callback without cookie: HTTP %d", resp.StatusCode)
	}
}

func TestAccountCreationForm(t *testing.T) {
	e, _ := start(t, Options{})
	client := clientID(t, e)
	b := newBrowser(t)
	platformLogin(t, e, b)
	resp, body := b.get(authorizeURL(e, client, nil))
	resp, body = viaLogin(t, e, b, resp, body)
	if !strings.Contains(resp.Request.URL.Path, "/upstream/link/") || !strings.Contains(body, "accept_terms") {
		t.Fatalf("expected the account creation form, got %s", resp.Request.URL.Path)
	}
	link := resp.Request.URL.String()
	csrf := csrfOf(body)
	// Missing csrf or action: an error; the username missing or invalid, or
	// the terms not ticked: the form again with MAS's message (link.rs,
	// post(): FieldError::Required and the tos_uri check).
	for name, tc := range map[string]struct {
		form   url.Values
		status int
		msg    string
	}{
		"no csrf":          {url.Values{"action": {"register"}, "accept_terms": {"on"}, "username": {localpart}}, 400, "CSRF"},
		"no action":        {url.Values{"csrf": {csrf}, "accept_terms": {"on"}, "username": {localpart}}, 400, "action"},
		"terms not agreed": {url.Values{"csrf": {csrf}, "action": {"register"}, "username": {localpart}}, 200, "terms of service"},
		"empty username":   {url.Values{"csrf": {csrf}, "action": {"register"}, "accept_terms": {"on"}}, 200, "This field is required"},
		"invalid username": {url.Values{"csrf": {csrf}, "action": {"register"}, "accept_terms": {"on"}, "username": {"Bot Acme"}}, 200, "invalid characters"},
	} {
		if resp, body := b.post(link, tc.form); resp.StatusCode != tc.status || !strings.Contains(body, tc.msg) {
			t.Errorf("%s: HTTP %d, want %d with %q", name, resp.StatusCode, tc.status, tc.msg)
		}
	}
	if e.HasUser(localpart) {
		t.Fatal("an account was created by a refused form")
	}
}

func TestTokenEndpointRules(t *testing.T) {
	e, clk := start(t, Options{AccessTTL: 2 * time.Second})
	client := clientID(t, e)
	code := func() string { return flow(t, e, newBrowser(t), authorizeURL(e, client, nil)).Get("code") }
	expect := func(name string, form url.Values, status int, errCode string) {
		t.Helper()
		st, out := tokenReq(t, e, form)
		if st != status || out["error"] != errCode {
			t.Errorf("%s: %d %v, want %d %s", name, st, out["error"], status, errCode)
		}
	}
	c := code()
	f := codeGrant(client, c)
	f.Set("client_id", "unknown")
	expect("unknown client", f, 401, "invalid_client")
	f = codeGrant(client, c)
	f.Del("code_verifier")
	expect("missing verifier", f, 400, "invalid_request")
	f = codeGrant(client, c)
	f.Set("redirect_uri", "http://localhost:9005/other")
	expect("redirect_uri mismatch", f, 400, "invalid_grant")
	st, tok := tokenReq(t, e, codeGrant(client, c))
	if st != 200 || !strings.HasPrefix(tok["access_token"].(string), "mat_") || tok["expires_in"].(float64) != 2 {
		t.Fatalf("exchange: %d %v", st, tok)
	}
	// A replay within 20 s is refused and nothing more; after 20 s it ends
	// the session the code started (token.rs, authorization_code_grant).
	expect("code reused", codeGrant(client, c), 400, "invalid_grant")
	if front(t, e, tok["access_token"].(string)) != 200 {
		t.Error("a replay within 20 s ended the session")
	}
	clk.add(21 * time.Second)
	expect("code reused after 20 s", codeGrant(client, c), 400, "invalid_grant")
	if front(t, e, tok["access_token"].(string)) != http.StatusUnauthorized {
		t.Error("tokens of a code replayed after 20 s still work")
	}

	f = codeGrant(client, code())
	f.Set("code_verifier", "another-verifier-another-verifier-another-0")
	expect("PKCE mismatch", f, 400, "invalid_grant")

	c = code()
	clk.add(11 * time.Minute)
	expect("code older than 10 min", codeGrant(client, c), 400, "invalid_grant")

	// A code issued without a challenge refuses a verifier.
	q := flow(t, e, newBrowser(t), authorizeURL(e, client, func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }))
	expect("verifier without challenge", codeGrant(client, q.Get("code")), 400, "invalid_request")

	// Access TTL and refresh rotation with the reuse rule.
	_, tok = tokenReq(t, e, codeGrant(client, code()))
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)
	if front(t, e, at) != 200 {
		t.Fatal("fresh access token refused")
	}
	clk.add(3 * time.Second)
	if front(t, e, at) != http.StatusUnauthorized {
		t.Fatal("expired access token accepted")
	}
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {client}}
	st, r1 := tokenReq(t, e, refresh)
	if st != 200 || r1["refresh_token"] == rt {
		t.Fatalf("refresh: %d %v", st, r1["error"])
	}
	// The old refresh token still works while its successor is unused ...
	st, r2 := tokenReq(t, e, refresh)
	if st != 200 {
		t.Fatalf("old refresh token refused while successor unused: %v", r2["error"])
	}
	// ... the replaced successor is dead, and once the new pair is used the
	// old token is refused.
	if front(t, e, r1["access_token"].(string)) != http.StatusUnauthorized {
		t.Error("replaced successor's access token still works")
	}
	if front(t, e, r2["access_token"].(string)) != 200 {
		t.Fatal("new access token refused")
	}
	expect("old refresh after successor used", refresh, 400, "invalid_grant")
	other := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {r2["refresh_token"].(string)}, "client_id": {clientID2(t, e)}}
	expect("refresh by another client", other, 400, "invalid_grant")
	expect("unsupported grant", url.Values{"grant_type": {"password"}, "client_id": {client}}, 400, "unsupported_grant_type")
}

func clientID2(t *testing.T, e *Emulator) string {
	m := nativeClient()
	m["client_name"] = "other"
	st, out := registerClient(t, e, m)
	if st != 201 {
		t.Fatal(out)
	}
	return out["client_id"].(string)
}

// front calls whoami on the Matrix front and checks the unknown-token shape.
func front(t *testing.T, e *Emulator, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.HomeserverURL+"/_matrix/client/v3/account/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, body := newBrowser(t).do(req)
	if resp.StatusCode == http.StatusUnauthorized {
		var out map[string]any
		_ = json.Unmarshal([]byte(body), &out)
		if out["errcode"] != "M_UNKNOWN_TOKEN" || out["soft_logout"] != false {
			t.Errorf("401 body %s, want M_UNKNOWN_TOKEN soft_logout false", body)
		}
	}
	return resp.StatusCode
}

func TestUpstreamProviderRules(t *testing.T) {
	e, _ := start(t, Options{})
	b := newBrowser(t)
	resp, _ := b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": email, "password": "wrong"},
		map[string]string{"x-tenant-id": tenant})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("wrong password: HTTP %d", resp.StatusCode)
	}
	resp, _ = b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": email, "password": password},
		map[string]string{"x-tenant-id": "other-tenant"})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("wrong tenant: HTTP %d", resp.StatusCode)
	}
	auth := func(b *browser, mod func(url.Values)) *http.Response {
		v := url.Values{"client_id": {UpstreamClientID}, "redirect_uri": {e.MASURL + "/upstream/callback/" + Provider},
			"response_type": {"code"}, "scope": {"openid email"}, "state": {"s"}, "prompt": {"none"}, "login_hint": {email}}
		if mod != nil {
			mod(v)
		}
		req, _ := http.NewRequest(http.MethodGet, e.UpstreamURL+"/api/oidc/auth?"+v.Encode(), nil)
		hc := *b.hc
		hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	errOf := func(r *http.Response) string {
		loc, _ := r.Location()
		if loc == nil {
			return ""
		}
		return loc.Query().Get("error")
	}
	if r := auth(newBrowser(t), nil); errOf(r) != "login_required" {
		t.Errorf("prompt=none without session: %d %q", r.StatusCode, errOf(r))
	}
	b = newBrowser(t)
	b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": email, "password": password},
		map[string]string{"x-tenant-id": tenant})
	if r := auth(b, func(v url.Values) { v.Set("login_hint", "someone-else@openmeet.net") }); errOf(r) != "login_required" {
		t.Errorf("login_hint of another user: %q", errOf(r))
	}
	if r := auth(b, func(v url.Values) { v.Set("client_id", "nope") }); r.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown client at the provider: %d", r.StatusCode)
	}
	if r := auth(b, nil); r.StatusCode != http.StatusFound || errOf(r) != "" {
		t.Errorf("with a session: %d %q", r.StatusCode, errOf(r))
	}
}

func TestCompatRules(t *testing.T) {
	e, _ := start(t, Options{PasswordsDisabled: true})
	b := newBrowser(t)
	resp, _ := b.postJSON(e.HomeserverURL+"/_matrix/client/v3/login", map[string]any{"type": "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": localpart}, "password": password}, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("password login with MAS passwords disabled: %d", resp.StatusCode)
	}
	// SSO: the redirectUrl gets a loginToken, single use, valid 30 s.
	b.postJSON(e.UpstreamURL+"/api/v1/auth/email/login", map[string]string{"email": email, "password": password},
		map[string]string{"x-tenant-id": tenant})
	resp, body := b.get(e.HomeserverURL + "/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape("http://localhost/sso"))
	resp, body = browse(t, e, b, resp, body)
	loc, _ := resp.Location()
	if loc == nil || loc.Query().Get("loginToken") == "" {
		t.Fatalf("no loginToken: %d %s", resp.StatusCode, body)
	}
	lt := loc.Query().Get("loginToken")
	login := map[string]any{"type": "m.login.token", "token": lt}
	if resp, _ := b.postJSON(e.HomeserverURL+"/_matrix/client/v3/login", login, nil); resp.StatusCode != 200 {
		t.Fatalf("m.login.token: %d", resp.StatusCode)
	}
	if resp, _ := b.postJSON(e.HomeserverURL+"/_matrix/client/v3/login", login, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("login token reused: %d", resp.StatusCode)
	}
}

func TestMoreFormAndTokenRules(t *testing.T) {
	e, _ := start(t, Options{ProviderPasswordForm: true})
	client := clientID(t, e)

	// A generic provider's HTML login form: csrf required, a wrong password shows
	// the form again, the right one continues to MAS.
	b := newBrowser(t)
	resp, body := b.get(authorizeURL(e, client, nil))
	resp, body = viaLogin(t, e, b, resp, body)
	if resp.StatusCode != 200 || !strings.HasSuffix(resp.Request.URL.Path, "/api/oidc/auth") || !strings.Contains(body, `type="password"`) {
		t.Fatalf("no provider login form: %d %s", resp.StatusCode, resp.Request.URL)
	}
	ret := regexp.MustCompile(`name="return" value="([^"]+)"`).FindStringSubmatch(body)
	if ret == nil {
		t.Fatal("no return field")
	}
	retv := html.UnescapeString(ret[1])
	login := e.UpstreamURL + "/api/oidc/login"
	if resp, _ := b.post(login, url.Values{"email": {email}, "password": {password}, "return": {retv}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("provider form without csrf: %d", resp.StatusCode)
	}
	resp, body = b.post(login, url.Values{"csrf": {csrfOf(body)}, "email": {email}, "password": {"wrong"}, "return": {retv}})
	if resp.StatusCode != 200 || !strings.Contains(body, "Wrong email or password") {
		t.Errorf("wrong password at the provider: %d", resp.StatusCode)
	}
	resp, _ = b.post(login, url.Values{"csrf": {csrfOf(body)}, "email": {email}, "password": {password}, "return": {retv}})
	if resp.StatusCode != 200 || !strings.Contains(resp.Request.URL.Path, "/upstream/link/") {
		t.Fatalf("right password did not reach MAS's link page: %d %s", resp.StatusCode, resp.Request.URL.Path)
	}
	// The link page needs the upstream session cookie of this browser.
	if resp, _ := newBrowser(t).get(resp.Request.URL.String()); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("link page without the upstream cookie: %d", resp.StatusCode)
	}

	// A code issued to one client is refused to another; revoked tokens
	// get M_UNKNOWN_TOKEN at the homeserver front.
	q := flow(t, e, newBrowser(t), authorizeURL(e, client, nil))
	f := codeGrant(clientID2(t, e), q.Get("code"))
	if st, out := tokenReq(t, e, f); st != 400 || out["error"] != "invalid_grant" {
		t.Errorf("code of another client: %d %v", st, out)
	}
	q = flow(t, e, newBrowser(t), authorizeURL(e, client, nil))
	_, tok := tokenReq(t, e, codeGrant(client, q.Get("code")))
	at := tok["access_token"].(string)
	if resp, _ := newBrowser(t).post(e.MASURL+"/oauth2/revoke", url.Values{"token": {at}, "client_id": {client}}); resp.StatusCode != 200 {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if front(t, e, at) != http.StatusUnauthorized {
		t.Error("revoked access token still works")
	}
	if front(t, e, "syt_not_issued_by_mas") != http.StatusUnauthorized {
		t.Error("a token MAS never issued is accepted")
	}

	// Compat SSO consent: csrf required.
	b = newBrowser(t)
	flow(t, e, b, authorizeURL(e, client, nil)) // logs the browser in at MAS
	resp, _ = b.get(e.HomeserverURL + "/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape("http://localhost/sso"))
	if resp.StatusCode != 200 || !strings.Contains(resp.Request.URL.Path, "/complete-compat-sso/") {
		t.Fatalf("compat page: %d %s", resp.StatusCode, resp.Request.URL.Path)
	}
	if resp, _ := b.post(resp.Request.URL.String(), url.Values{}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("compat consent without csrf: %d", resp.StatusCode)
	}
}
