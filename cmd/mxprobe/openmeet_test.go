package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

func shippedArray(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../config/testdata/openmeet/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Done-when 1 (check-config): the platform's shipped TENANTS_B64 examples
// pass, every entry that cannot be probed reported on a line of its own.
func TestCheckConfigShippedTenantArrays(t *testing.T) {
	good := writeFile(t, "good.yml", "global:\n  homeserver_url: http://127.0.0.1:8008\n")
	for file, want := range map[string][]string{
		"relational.json": {
			`TENANTS_B64[0] (name "Public"): skipped: empty id`,
			`TENANTS_B64[1] (id "1"): skipped: no bot`,
			`TENANTS_B64[2] (id "testing"): skipped: no bot`,
		},
		"relational-ci.json": {
			`TENANTS_B64[0] (name "Public"): skipped: empty id`,
			`TENANTS_B64[1] (id "ciTenantA"): skipped: no bot`,
			`TENANTS_B64[2] (id "ciTenantB"): skipped: no bot`,
		},
	} {
		t.Run(file, func(t *testing.T) {
			t.Setenv("TENANTS_B64", base64.StdEncoding.EncodeToString(shippedArray(t, file)))
			code, out, errOut := runCLI(t, "check-config", "--config.file", good)
			if code != 0 {
				t.Fatalf("exit %d\n%s%s", code, out, errOut)
			}
			for _, w := range want {
				if strings.Count(out, w) != 1 {
					t.Errorf("want %q once in:\n%s", w, out)
				}
			}
			if !strings.Contains(out, "OK: 0 tenant(s)") {
				t.Errorf("no OK line:\n%s", out)
			}
		})
	}
}

// Done-when 1 (serve): with the shipped entries plus a tenant that has a bot
// (matrixConfig.botUser, a real Dendrite account), the daemon starts, reports
// each skipped entry once (log and mxprobe_tenants_skipped, also after a
// reload), and probes the rest: the bot's login and the platform's health
// endpoint through the http probe.
func TestServeShippedTenantsProbesTheRest(t *testing.T) {
	hs := testenv.SharedDendrite(t)
	user, pw := hs.User(t, "openmeet-bot-acme")
	var entries []map[string]any
	if err := json.Unmarshal(shippedArray(t, "relational-ci.json"), &entries); err != nil {
		t.Fatal(err)
	}
	entries = append(entries, map[string]any{
		"id": "acme", "name": "ACME",
		"matrixConfig": map[string]any{
			"homeserverUrl": hs.URL, "serverName": hs.ServerName,
			"botUser": map[string]any{"email": "Bot-Acme@OpenMeet.net", "slug": user, "password": pw},
		},
	})
	raw, _ := json.Marshal(entries)
	t.Setenv("TENANTS_B64", base64.RawURLEncoding.EncodeToString(raw))
	t.Setenv("MATRIX_HOMESERVER_URL", hs.URL)
	t.Setenv("MATRIX_SERVER_NAME", hs.ServerName)
	// The platform's application service, unknown to this homeserver: the
	// tenant that watches it fails at its first step, without showing the token.
	const asToken = "as-token-LEAKCHECK-9f2c"
	t.Setenv("MATRIX_APPSERVICE_ID", "openmeet-appservice")
	t.Setenv("MATRIX_APPSERVICE_TOKEN", asToken)

	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok","info":{"matrix":{"status":"up"}}}`)
	}))
	defer health.Close()
	cfgPath := writeFile(t, "c.yml", `global:
  concurrency: 4
  jitter: 0
probes:
  - name: login
    type: login
    schedule: "@every 1s"
    timeout: 10s
  - name: readiness
    type: http
    schedule: "@every 1s"
    http:
      url: `+health.URL+`/health/readiness
      json: [{path: status, equals: ok}]
`)
	var logs testenv.SyncBuffer
	d, err := newDaemon(&cli{configFile: cfgPath}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	defer d.shutdown()
	waitFor(t, "the bot's login, the appservice check and the health check", 20*time.Second, func() bool {
		l, okL := latest(d, "login", "acme")
		a, okA := latest(d, "login", "appservice")
		h, okH := latest(d, "readiness", "")
		return okL && okA && okH && l.Outcome == probes.OutcomeSuccess && h.Outcome == probes.OutcomeSuccess &&
			a.Class == probes.ClassAuthFailed && a.FailedStep == "login"
	})
	if got := d.config().Tenants; len(got) != 2 || got[0].ID != "acme" || got[0].Bot.Email != "bot-acme@openmeet.net" || got[1].ID != "appservice" {
		t.Fatalf("tenants: %+v", got)
	}
	if err := d.reload(); err != nil { // the same entries again: not reported twice
		t.Fatal(err)
	}
	m := scrape(t, d)
	for _, want := range []string{`mxprobe_tenants_skipped{reason="empty_id"} 1`, `mxprobe_tenants_skipped{reason="no_bot"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	log := logs.String()
	for _, w := range []string{"index=0", `id=ciTenantA`, `id=ciTenantB`} {
		if n := strings.Count(log, "TENANTS_B64 entry not probed"); n != 3 || !strings.Contains(log, w) {
			t.Fatalf("want 3 skip lines (one per entry, once), got %d, %q missing?\n%s", n, w, log)
		}
	}
	var pages strings.Builder
	for _, path := range []string{"/", "/api/v1/results", "/metrics"} {
		rr := httptest.NewRecorder()
		d.web.Handler().ServeHTTP(rr, httptest.NewRequest("GET", path, nil))
		pages.WriteString(rr.Body.String())
	}
	if !strings.Contains(pages.String(), "appservice") {
		t.Fatal("the pages do not show the appservice tenant")
	}
	for _, secret := range []string{pw, asToken} {
		if strings.Contains(log+m+pages.String(), secret) {
			t.Fatalf("secret %q leaked", secret)
		}
	}
}

// `mxprobe run http --target URL` checks a URL without a config entry.
func TestRunHTTPTarget(t *testing.T) {
	t.Setenv("TENANTS_B64", "")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health/liveness" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer srv.Close()
	good := writeFile(t, "good.yml", "global:\n  homeserver_url: http://127.0.0.1:8008\n")
	if code, out, errOut := runCLI(t, "run", "http", "--target", srv.URL+"/health/liveness", "--config.file", good); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ := runCLI(t, "run", "http", "--target", srv.URL+"/gone", "--config.file", good, "-o", "json")
	var r probes.Result
	_ = json.Unmarshal([]byte(out), &r)
	if code != 1 || r.Class != probes.ClassNotFound || r.FailedStep != "status" {
		t.Fatalf("exit %d: %+v", code, r)
	}
	if code, _, errOut := runCLI(t, "run", "http", "--config.file", good); code != 2 || !strings.Contains(errOut, "http.url: missing") || !strings.Contains(errOut, "--target URL") {
		t.Fatalf("without a target: exit %d: %s", code, errOut)
	}
}
