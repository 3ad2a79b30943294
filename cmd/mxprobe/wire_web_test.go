package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

type webTenant struct{ id, name, user, password string }

func webConfig(hs, serverName string, tenants []webTenant, extra string) string {
	var b strings.Builder
	// Opted out of synapse_limits: a bare Dendrite, logins every few seconds
	// and wrong passwords on purpose.
	fmt.Fprintf(&b, "global:\n  homeserver_url: %s\n  server_name: %s\n  concurrency: 4\n  jitter: 0\n  shutdown_grace: 2s\nsynapse_limits:\n  disabled: true\ntenants:\n", hs, serverName)
	for _, t := range tenants {
		fmt.Fprintf(&b, "  - id: %s\n    name: %q\n    bot:\n      user: %s\n      password: %q\n", t.id, t.name, t.user, t.password)
	}
	b.WriteString("probes:\n  - name: login\n    type: login\n    schedule: \"@every 2s\"\n    timeout: 10s\n  - name: versions\n    type: versions\n    schedule: \"@every 2s\"\n    timeout: 10s\n")
	b.WriteString(extra)
	return b.String()
}

// TestRunAllJSON is issue 7's "Done when" 1: `mxprobe run login --all
// --output json` gives one Result per tenant and exits 0; with one tenant's
// password wrong it exits 1 and names that tenant.
func TestRunAllJSON(t *testing.T) {
	d := testenv.SharedDendrite(t)
	var tenants []webTenant
	for _, id := range []string{"one", "two", "three"} {
		u, p := d.User(t, "openmeet-bot-"+id)
		tenants = append(tenants, webTenant{id, "Tenant " + id, u, p})
	}
	cfg := writeFile(t, "ok.yml", webConfig(d.URL, d.ServerName, tenants, ""))
	code, out, errOut := runCLI(t, "run", "login", "--all", "--output", "json", "--config.file", cfg)
	var all []probes.Result
	if err := json.Unmarshal([]byte(out), &all); err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	seen := map[string]bool{}
	for _, r := range all {
		if r.Outcome != probes.OutcomeSuccess || r.Probe != "login" || len(r.Steps) == 0 {
			t.Errorf("result: %+v", r)
		}
		seen[r.Tenant] = true
	}
	if len(all) != 3 || !seen["one"] || !seen["two"] || !seen["three"] {
		t.Fatalf("want one result per tenant, got %d: %v", len(all), seen)
	}

	tenants[1].password = "wrong-SECRET-password"
	cfg = writeFile(t, "bad.yml", webConfig(d.URL, d.ServerName, tenants, ""))
	code, out, errOut = runCLI(t, "run", "login", "--all", "-o", "json", "--config.file", cfg)
	all = nil
	if err := json.Unmarshal([]byte(out), &all); err != nil || code != 1 || len(all) != 3 {
		t.Fatalf("exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	if !strings.Contains(errOut, "login failed for: two") {
		t.Fatalf("stderr does not name the failing tenant:\n%s", errOut)
	}
	if strings.Contains(out+errOut, "SECRET") {
		t.Fatal("password in output")
	}

	// Text on a terminal: a progress line, one line per tenant as it
	// finishes, the summary table at the end.
	var o, e bytes.Buffer
	sys := osSystem()
	sys.isTerminal = func(io.Writer) bool { return true }
	code = runWith([]string{"run", "login", "--all", "--config.file", cfg}, &o, &e, sys)
	out = o.String()
	if code != 1 {
		t.Fatalf("text exit %d", code)
	}
	for _, want := range []string{"running login for 3 tenants", "\r\033[K", "/3 done", "FAIL auth_failed at login", "TENANT", "RESULT"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%q", want, out)
		}
	}
}

// newWebDaemon starts an in-process daemon on cfg and serves its handler.
func newWebDaemon(t *testing.T, cfg string) (*daemon, *httptest.Server) {
	t.Helper()
	d, err := newDaemon(&cli{configFile: writeFile(t, "mxprobe.yml", cfg)}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	d.ready.Store(true)
	ts := httptest.NewServer(d.web.Handler())
	t.Cleanup(func() {
		ts.Close()
		d.shutdown()
	})
	return d, ts
}

// TestDaemonProbeAndAPI is "Done when" 3 against the real homeserver, and
// the API's run-now on the daemon.
func TestDaemonProbeAndAPI(t *testing.T) {
	hs := testenv.SharedDendrite(t)
	u, p := hs.User(t, "openmeet-bot-probe")
	cfg := webConfig(hs.URL, hs.ServerName, []webTenant{{"acme", "Acme", u, p}}, "web:\n  api_token: api-SECRET-token\n")
	cfg = strings.ReplaceAll(cfg, "@every 2s", "@every 1h")
	_, ts := newWebDaemon(t, cfg)

	// With a token configured, /probe needs it too.
	if _, code := httpGet(t, ts.URL+"/probe?module=login&tenant=acme"); code != http.StatusUnauthorized {
		t.Fatalf("/probe without the token: %d", code)
	}
	httpGet := func(t *testing.T, u string) (string, int) {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer api-SECRET-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.StatusCode
	}
	body, code := httpGet(t, ts.URL+"/probe?module=login&tenant=acme")
	if code != 200 || !strings.Contains(body, "probe_success 1") || !strings.Contains(body, `probe_step_duration_seconds{step="whoami"}`) {
		t.Fatalf("/probe: %d\n%s", code, body)
	}
	body, code = httpGet(t, ts.URL+"/probe?module=nope&tenant=acme")
	if code != 400 || !strings.Contains(body, `unknown module "nope"`) {
		t.Fatalf("unknown module: %d %s", code, body)
	}
	body, code = httpGet(t, ts.URL+"/probe?module=login&tenant=nobody")
	if code != 400 || !strings.Contains(body, `unknown tenant "nobody"`) {
		t.Fatalf("unknown tenant: %d %s", code, body)
	}

	req, _ := http.NewRequest("POST", ts.URL+"/api/v1/probes/login/run?tenant=acme", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("run-now without token: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", ts.URL+"/api/v1/probes/login/run?tenant=acme", nil)
	req.Header.Set("Authorization", "Bearer api-SECRET-token")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var r probes.Result
	err = json.NewDecoder(resp.Body).Decode(&r)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || r.Outcome != probes.OutcomeSuccess || r.Tenant != "acme" {
		t.Fatalf("run-now: %d %v %+v", resp.StatusCode, err, r)
	}
}

func httpGet(t *testing.T, u string) (string, int) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// chromium runs headless Chromium with args and returns its stdout.
func chromium(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("headless Chromium is needed for this test (Debian package chromium; .ci/run installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

// TestStatusPageInChromium is "Done when" 4: the status page of a daemon
// probing the local Dendrite, loaded in headless Chromium; rows and states
// are read from the DOM, a tenant named <script>alert(1)</script> shows as
// text, and a screenshot is saved in the test's temp dir
// (MXPROBE_SCREENSHOT=path copies it out).
func TestStatusPageInChromium(t *testing.T) {
	hs := testenv.SharedDendrite(t)
	testenv.MarkIntegration(t, "headless Chromium")
	uGood, pGood := hs.User(t, "openmeet-bot-web")
	uBad, _ := hs.User(t, "openmeet-bot-webbad")
	uXSS, pXSS := hs.User(t, "openmeet-bot-xss")
	tenants := []webTenant{
		{"acme", "Acme Events", uGood, pGood},
		{"globex", "Globex", uBad, "wrong-SECRET-password"},
		{"xss", "<script>alert(1)</script>", uXSS, pXSS},
	}
	d, ts := newWebDaemon(t, webConfig(hs.URL, hs.ServerName, tenants, "web:\n  title: Matrix probes <b>staging</b>\n  refresh_interval: 0s\n"))
	waitFor(t, "three runs of every probe", 60*time.Second, func() bool {
		for _, k := range [][2]string{{"login", "acme"}, {"login", "globex"}, {"login", "xss"}, {"versions", ""}} {
			e, ok := d.history.Get(k[0], k[1])
			if !ok || len(e.Recent) < 3 {
				return false
			}
		}
		return true
	})

	dom := chromium(t, "--dump-dom", ts.URL+"/")
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	type rowInfo struct{ state, tenantName, stateText, lastFailure string }
	rows := map[string]rowInfo{}
	var scripts int
	var title string
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch {
			case n.Data == "script":
				scripts++
			case n.Data == "h1":
				title = textOf(n)
			case n.Data == "tr" && attr(n, "data-probe") != "":
				ri := rowInfo{state: attr(n, "data-state")}
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					if c.Type != html.ElementNode {
						continue
					}
					switch attr(c, "class") {
					case "tenant":
						ri.tenantName = textOf(findClass(c, "tenant-name"))
					case "state":
						ri.stateText = textOf(c)
					case "last-failure":
						ri.lastFailure = textOf(c)
					}
				}
				rows[attr(n, "data-probe")+"/"+attr(n, "data-tenant")] = ri
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if scripts != 0 {
		t.Errorf("%d script elements in the DOM", scripts)
	}
	if title != "Matrix probes <b>staging</b>" {
		t.Errorf("title = %q", title)
	}
	want := map[string]struct{ state, name string }{
		"login/acme":   {"ok", "Acme Events"},
		"login/globex": {"fail", "Globex"},
		"login/xss":    {"ok", "<script>alert(1)</script>"},
		"versions/":    {"ok", "(deployment)"},
	}
	if len(rows) != len(want) {
		t.Errorf("%d rows, want %d: %v", len(rows), len(want), rows)
	}
	for k, w := range want {
		r, ok := rows[k]
		if !ok {
			t.Errorf("no row %s", k)
			continue
		}
		if r.state != w.state || r.tenantName != w.name {
			t.Errorf("row %s: state %q name %q, want %q %q", k, r.state, r.tenantName, w.state, w.name)
		}
	}
	if g := rows["login/globex"]; !strings.Contains(g.stateText, "FAIL auth_failed") || !strings.Contains(g.lastFailure, "login") || !strings.Contains(g.lastFailure, "auth_failed") {
		t.Errorf("failing row: %+v", g)
	}
	if strings.Contains(dom, "SECRET") {
		t.Error("secret on the page")
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	chromium(t, "--screenshot="+shot, "--window-size=1400,800", "--hide-scrollbars", ts.URL+"/")
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot: %v (%d bytes)", err, len(png))
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if dst := os.Getenv("MXPROBE_SCREENSHOT"); dst != "" {
		_ = os.WriteFile(dst, png, 0o644)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func findClass(n *html.Node, class string) *html.Node {
	if n == nil {
		return nil
	}
	if n.Type == html.ElementNode && attr(n, "class") == class {
		return n
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if f := findClass(c, class); f != nil {
			return f
		}
	}
	return nil
}

func textOf(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}
