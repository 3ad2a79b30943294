package web

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

func TestStatusPageEscapesAndShowsRows(t *testing.T) {
	f := newFixture(t, Settings{TenantNames: map[string]string{"acme": "Acme <i>Corp</i>", "<script>alert(1)</script>": "<script>alert(1)</script>"}})
	f.srv.SetAlerts(&fakeAlerts{silences: map[string]Silence{}})
	for _, tn := range []string{"acme", "broken", "<script>alert(1)</script>"} {
		if resp, body := f.do("POST", "/api/v1/probes/login/run?tenant="+url.QueryEscape(tn), "", nil); resp.StatusCode != 200 {
			t.Fatalf("run %s: %d %s", tn, resp.StatusCode, body)
		}
	}
	resp, body := f.do("GET", "/", "", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "<i>Corp") || strings.Contains(body, "<fails>") || strings.Contains(body, "password <b>") {
		t.Fatalf("unescaped text from config or homeserver:\n%s", body)
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "Acme &lt;i&gt;Corp&lt;/i&gt;", `data-state="fail"`, `data-state="ok"`,
		`data-state="pending"`, "LoginFailing", "<svg class=\"spark\"", "Run now", "FAIL auth_failed", "Invalid username or password &lt;b&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("script element on the page")
	}
	// Auth off: the run-now form works without a CSRF token.
	resp, _ = f.do("POST", "/run", "", strings.NewReader(""))
	if resp.StatusCode != 200 { // redirected to the page with an error note
		t.Fatalf("empty run form: %d", resp.StatusCode)
	}
}

// TestRunNowFormCSRF: with a token configured, the page's run-now form needs
// a signed-in session and the CSRF token of that session.
func TestRunNowFormCSRF(t *testing.T) {
	f := newFixture(t, Settings{Token: testToken})
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	form := url.Values{"probe": {"login"}, "tenant": {"acme"}}
	resp, err := c.PostForm(f.ts.URL+"/run", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || f.runs.Load() != 0 {
		t.Fatalf("run without session: %d, %d runs", resp.StatusCode, f.runs.Load())
	}
	page := get(t, c, f.ts.URL+"/")
	if strings.Contains(page, "Run now") || !strings.Contains(page, `action="/login"`) {
		t.Fatal("signed-out page offers runs or no sign-in form")
	}
	resp, _ = c.PostForm(f.ts.URL+"/login", url.Values{"token": {"wrong"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token login: %d", resp.StatusCode)
	}
	page = postPage(t, c, f.ts.URL+"/login", url.Values{"token": {testToken}})
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, "Signed in.") {
		t.Fatalf("no CSRF token after sign-in:\n%s", page)
	}
	if strings.Contains(page, testToken) {
		t.Fatal("token on the page")
	}
	// The session alone is not enough (a cross-site form would carry the cookie).
	resp, _ = c.PostForm(f.ts.URL+"/run", form)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("run without CSRF token: %d", resp.StatusCode)
	}
	form.Set("csrf", m[1]+"x")
	resp, _ = c.PostForm(f.ts.URL+"/run", form)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || f.runs.Load() != 0 {
		t.Fatalf("run with bad CSRF token: %d", resp.StatusCode)
	}
	form.Set("csrf", m[1])
	page = postPage(t, c, f.ts.URL+"/run", form)
	if f.runs.Load() != 1 || !strings.Contains(page, "Ran login for acme: OK in") {
		t.Fatalf("%d runs; page:\n%s", f.runs.Load(), page)
	}
	// protect_reads: the page itself needs the session.
	f.mu.Lock()
	f.st.ProtectReads = true
	f.mu.Unlock()
	resp, body := f.do("GET", "/", "", nil)
	if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, `data-probe=`) {
		t.Fatalf("protected page without session: %d", resp.StatusCode)
	}
	if page = get(t, c, f.ts.URL+"/"); !strings.Contains(page, `data-probe="login"`) {
		t.Fatal("protected page with session lacks rows")
	}
	// A new token ends old sessions.
	f.mu.Lock()
	f.st.Token = "another-token"
	f.mu.Unlock()
	if page = get(t, c, f.ts.URL+"/"); strings.Contains(page, `data-probe="login"`) {
		t.Fatal("session survived a token change")
	}
}

func get(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func postPage(t *testing.T, c *http.Client, u string, form url.Values) string {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Issue 22, item 5: a tenant the login budget holds back shows when its
// login comes ("next login in …"), with no run yet and after a run.
func TestStatusPageShowsNextLogin(t *testing.T) {
	f := newFixture(t, Settings{})
	skipped := func(tenant string, next float64) probes.Result {
		return probes.Result{Probe: "login", Tenant: tenant, Outcome: probes.OutcomeSkipped, Class: probes.ClassLoginBudget,
			Started: time.Now(), Signals: map[string]float64{probes.SignalNextLoginSeconds: next}}
	}
	f.hist.Observe(skipped("acme", 250))
	if resp, body := f.do("POST", "/api/v1/probes/login/run?tenant=broken", "", nil); resp.StatusCode != 200 {
		t.Fatalf("run: %d %s", resp.StatusCode, body)
	}
	f.hist.Observe(skipped("broken", 3600))
	_, body := f.do("GET", "/", "", nil)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`st-pending">next login in 4m(09|10)s \(login budget\)<`),
		regexp.MustCompile(`FAIL auth_failed; next login in (59m5\ds|1h0m0s) \(login budget\)<`),
	} {
		if !want.MatchString(body) {
			t.Errorf("page lacks %s", want)
		}
	}
	// A run that measured again clears it.
	f.hist.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeSuccess, Started: time.Now()})
	if _, body := f.do("GET", "/", "", nil); strings.Contains(body, "next login in 4m") {
		t.Error("the wait is still shown after a measured run")
	}
}

// The API lists the wait too: with the last Result, or alone before the
// first run.
func TestAPIResultsShowNextLogin(t *testing.T) {
	f := newFixture(t, Settings{})
	f.hist.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeSkipped, Class: probes.ClassLoginBudget,
		Started: time.Now(), Signals: map[string]float64{probes.SignalNextLoginSeconds: 250}})
	_, body := f.do("GET", "/api/v1/results?probe=login&tenant=acme", "", nil)
	if !regexp.MustCompile(`"waiting":\s*"next login in 4m(09|10)s \(login budget\)"`).MatchString(body) ||
		!regexp.MustCompile(`"next_login_in_seconds":\s*2(49|50)`).MatchString(body) || strings.Contains(body, `"outcome"`) {
		t.Fatalf("API: %s", body)
	}
}
