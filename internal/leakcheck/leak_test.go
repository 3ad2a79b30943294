package leakcheck

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes/statelog"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// secrets are recognisable values seeded into every secret field mxprobe
// knows; none may show up anywhere the daemon writes or serves.
var secrets = map[string]string{
	"file tenant password":     "pwFILE-7Kq2-SEKRIT",
	"password_file content":    "pwFROMFILE-2Hs8-SEKRIT",
	"access token":             "syt_TOKEN-9Xv1-SEKRIT",
	"peer password":            "pwPEER-4Nc3-SEKRIT",
	"TENANTS_B64 password":     "pwB64-3Jd8-SEKRIT",
	"unreachable hs password":  "pwUNREACH-5Lm4-SEKRIT",
	"MAS bot password":         "pwMAS-8Rt6-SEKRIT",
	"slack token":              "xoxb-SLACK-4Hn7-SEKRIT",
	"slack webhook":            "HOOK-2Wp9-SEKRIT",
	"webhook url":              "URL-6Fs3-SEKRIT",
	"webhook hmac":             "HMAC-1Ce5-SEKRIT",
	"matrix notifier password": "pwMXNOTIFY-0Gy7-SEKRIT",
	"web api token":            "APITOKEN-4Tb2-SEKRIT",
	"synapse bearer token":     "BEARER-7Zu3-SEKRIT",
	"synapse basic password":   "BASIC-9Qa1-SEKRIT",
}

// hostile answers with everything it was sent: a server that echoes
// credentials back in its error pages must not get them into mxprobe's output.
func hostile(status int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		msg := fmt.Sprintf("%s %s auth=%q body=%s", r.Method, r.URL, r.Header.Get("Authorization"), body)
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": msg, "errcode": "M_FORBIDDEN"})
	}))
}

// TestNoSecretLeaks seeds a secret into every secret field (config file,
// *_file, TENANTS_B64, MAS, notifiers, web, Synapse), runs `mxprobe serve`
// with every failure path it can take locally — wrong passwords against the
// real Dendrite and the MAS emulator, an unreachable homeserver, a rejected
// token, Slack/webhook/Matrix notifiers failing, hostile servers echoing the
// credentials, API calls with a wrong and the right token, a reload with a
// bad config — and greps the logs, /metrics, API replies, /probe, the status
// page and the alert state file: zero hits.
func TestNoSecretLeaks(t *testing.T) {
	d := testenv.SharedDendrite(t)
	bin := testenv.BuildMxprobe(t)
	dir := t.TempDir()

	botUser, _ := d.User(t, "leak-bot")
	tokUser, _ := d.User(t, "leak-tok")
	fileUser, _ := d.User(t, "leak-file")
	notifyUser, _ := d.User(t, "leak-notify")
	peerUser, _ := d.User(t, "leak-peer")
	pwFile := filepath.Join(dir, "bot-password")
	if err := os.WriteFile(pwFile, []byte(secrets["password_file content"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	emu, err := masemu.Start(masemu.Options{Dendrite: d})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	emu.AddUpstreamUser("leak-mas", "bot-leak-mas@openmeet.net", "the-real-password", "openmeet-bot-leak-mas")

	slackAPI := hostile(http.StatusInternalServerError)
	defer slackAPI.Close()
	synapseSrv := hostile(http.StatusUnauthorized)
	defer synapseSrv.Close()
	hsEcho := hostile(http.StatusForbidden)
	defer hsEcho.Close()

	b64, _ := json.Marshal([]map[string]any{
		{"id": "leak-b64", "botUser": map[string]any{"slug": botUser, "password": secrets["TENANTS_B64 password"]},
			"matrixConfig": map[string]any{"homeserverUrl": d.URL, "serverName": d.ServerName},
			"oauth":        map[string]any{"clientSecret": "not-read"}},
		{"id": "leak-unreach", "botUser": map[string]any{"slug": "nobody", "password": secrets["unreachable hs password"]},
			"matrixConfig": map[string]any{"homeserverUrl": "http://127.0.0.1:1", "serverName": "unreachable.example"}},
	})

	config := func(extra string) string {
		return fmt.Sprintf(`global:
  homeserver_url: %[1]s
  server_name: %[2]s
  data_dir: %[3]s
  concurrency: 8
mas:
  public_url: %[4]s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %[5]s}
tenants:
  - id: leak-file
    bot: {method: password, user: %[6]s, password: %[7]s}
    peer: {method: password, user: %[8]s, password: %[9]s}
  - id: leak-pwfile
    bot: {method: password, user: %[10]s, password_file: %[11]s}
  - id: leak-token
    bot: {method: token, user: %[12]s, access_token: %[13]s}
  - id: leak-mas
    homeserver_url: %[14]s
    bot: {method: mas_oidc, user: openmeet-bot-leak-mas, email: bot-leak-mas@openmeet.net, password: %[15]s}
  - id: leak-echo
    homeserver_url: %[16]s
    bot: {method: password, user: echo, password: %[7]s}
probes:
  - {name: login, type: login, schedule: "@every 2s", timeout: 5s}
  - {name: roundtrip, type: roundtrip, schedule: "@every 3s", timeout: 5s, tenants: [leak-file]}
  - name: synapse
    type: synapse_metrics
    schedule: "@every 2s"
    timeout: 5s
    synapse: {url: "%[17]s/_synapse/metrics", bearer_token: %[18]s}
  - name: synapse-basic
    type: synapse_metrics
    schedule: "@every 2s"
    timeout: 5s
    synapse: {url: "%[17]s/_synapse/metrics", basic_auth: {username: metrics, password: %[19]s}}
alerting:
  evaluation_interval: 1s
  rules:
    - {name: login_failing, probe: login, failures: 1, severity: critical}
    - {name: synapse_failing, probe: synapse, failures: 1}
  notifiers:
    - {name: slack-api, type: slack, timeout: 2s, max_backoff: 2s, slack: {token: %[20]s, channel: C0LEAK, api_url: "%[21]s/api/"}}
    - {name: slack-hook, type: slack, timeout: 2s, max_backoff: 2s, slack: {webhook_url: "http://127.0.0.1:1/services/T0/B0/%[22]s"}}
    - {name: hook, type: webhook, timeout: 2s, max_backoff: 2s, webhook: {url: "%[21]s/hook/%[23]s", hmac_secret: %[24]s}}
    - {name: room, type: matrix, timeout: 2s, max_backoff: 2s, matrix: {room_id: "!nope:%[2]s", user: %[25]s, password: %[26]s}}
web:
  api_token: %[27]s
%[28]s`,
			d.URL, d.ServerName, filepath.Join(dir, "data"), emu.MASURL, emu.UpstreamURL,
			botUser, secrets["file tenant password"], peerUser, secrets["peer password"],
			fileUser, pwFile,
			tokUser, secrets["access token"],
			emu.HomeserverURL, secrets["MAS bot password"],
			hsEcho.URL,
			synapseSrv.URL, secrets["synapse bearer token"], secrets["synapse basic password"],
			secrets["slack token"], slackAPI.URL, secrets["slack webhook"], secrets["webhook url"], secrets["webhook hmac"],
			notifyUser, secrets["matrix notifier password"],
			secrets["web api token"], extra)
	}
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	if err := os.WriteFile(cfgPath, []byte(config("")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "check-config", "--config.file", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s", err, out)
	}

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	logs := &testenv.SyncBuffer{}
	cmd := exec.Command(bin, "serve", "--config.file", cfgPath, "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--log.level", "debug")
	cmd.Env = append(os.Environ(), "TENANTS_B64="+base64.StdEncoding.EncodeToString(b64))
	cmd.Stdout, cmd.Stderr = logs, logs
	daemon, err := testenv.StartProc(cmd)
	if err != nil {
		t.Fatal(err)
	}
	done := daemon.Done()
	defer daemon.Stop(syscall.SIGTERM, 20*time.Second)

	get := func(method, path, token string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get("GET", "/-/ready", ""); code == 200 {
			break
		}
		select {
		case <-done:
			t.Fatalf("mxprobe exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mxprobe not ready:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Wait until every failure path has been taken: each login failed, the
	// notifiers failed deliveries.
	failing := regexp.MustCompile(`mxprobe_notifications_total\{notifier="([^"]+)",result="failure"\} [1-9]`)
	wantFailing := map[string]bool{"slack-api": true, "slack-hook": true, "hook": true, "room": true}
	// The MAS tenants' first logins are spread by the MAS login budget (4
	// per minute, 15 s apart), so the last of them comes about 30 s in; the
	// loop ends as soon as every path was taken.
	deadline = time.Now().Add(2 * time.Minute)
	for {
		_, m := get("GET", "/metrics", "")
		seen := map[string]bool{}
		for _, mm := range failing.FindAllStringSubmatch(m, -1) {
			seen[mm[1]] = true
		}
		all := true
		for n := range wantFailing {
			all = all && seen[n]
		}
		tenantsFailed := true
		for _, tn := range []string{"leak-file", "leak-pwfile", "leak-token", "leak-mas", "leak-echo", "leak-b64", "leak-unreach"} {
			tenantsFailed = tenantsFailed && strings.Contains(m, `mxprobe_probe_failed_step{class=`) &&
				regexp.MustCompile(`mxprobe_probe_failed_step\{[^}]*probe="login"[^}]*tenant="`+tn+`"`).MatchString(m)
		}
		if all && tenantsFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("failure paths not all taken after 2 minutes (notifier failures %v, logins failed %v):\n%s", seen, tenantsFailed, m)
		}
		time.Sleep(500 * time.Millisecond)
	}

	var outputs []struct{ name, body string }
	add := func(name string, code int, body string) {
		if code == 0 {
			t.Errorf("%s: no answer", name)
		}
		outputs = append(outputs, struct{ name, body string }{name, body})
	}
	for _, p := range []string{"/metrics", "/", "/api/v1/probes", "/api/v1/results", "/api/v1/alerts", "/api/v1/silences",
		"/probe?module=login&tenant=leak-file", "/probe?module=login&tenant=leak-b64", "/probe?module=synapse",
		"/probe?module=login&tenant=leak-mas&debug=true"} {
		code, body := get("GET", p, "")
		add("GET "+p, code, body)
		code, body = get("GET", p, secrets["web api token"])
		add("GET "+p+" (token)", code, body)
	}
	code, body := get("POST", "/api/v1/probes/login/run?tenant=leak-file", "wrong-token")
	add("POST run (wrong token)", code, body)
	code, body = get("POST", "/api/v1/probes/login/run?tenant=leak-token", secrets["web api token"])
	add("POST run", code, body)

	// A reload with a bad config: rejected, logged, old config kept.
	if err := os.WriteFile(cfgPath, []byte(config("unknown_section: {password: "+secrets["file tenant password"]+"}\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), "configuration not loaded") {
		if time.Now().After(deadline) {
			t.Fatalf("bad reload not reported:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, body = get("POST", "/-/reload", "")
	add("POST /-/reload (bad config)", code, body)
	code, body = get("GET", "/metrics", "")
	add("GET /metrics after reload", code, body)
	if st, err := os.ReadFile(filepath.Join(dir, "data", "alerts.json")); err == nil {
		add("alert state file", 200, string(st))
	}

	// Stop the daemon so its shutdown logs are in too.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Error("mxprobe did not stop")
	}
	add("daemon log", 200, logs.String())

	// The CLI: check-config on the bad file, then `mxprobe run` (text and
	// JSON) over every tenant with the good one.
	env := append(os.Environ(), "TENANTS_B64="+base64.StdEncoding.EncodeToString(b64))
	cli := func(name string, args ...string) {
		c := exec.Command(bin, args...)
		c.Env = env
		out, _ := c.CombinedOutput()
		add(name, 200, string(out))
		if os.Getenv("LEAK_DEBUG") != "" {
			t.Logf("%s: %.300s", name, out)
		}
	}
	cli("check-config (bad config)", "check-config", "--config.file", cfgPath)
	if err := os.WriteFile(cfgPath, []byte(config("")), 0o600); err != nil {
		t.Fatal(err)
	}
	cli("run login --all", "run", "login", "--all", "--config.file", cfgPath, "--timeout", "10s")
	cli("run login --all --output json", "run", "login", "--all", "--output", "json", "--config.file", cfgPath, "--timeout", "10s")
	cli("run synapse --output json", "run", "synapse", "--output", "json", "--config.file", cfgPath, "--timeout", "10s")

	// The sessions kept in data_dir hold no configured secret, and the
	// tokens they hold, if any login passed (issued by the homeserver or
	// MAS), show nowhere else.
	issued := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(dir, "data", "sessions.log")); err == nil {
		recs, ok := statelog.Read(filepath.Join(dir, "data", "sessions.log"), nil)
		if !ok {
			t.Fatal("sessions file not readable")
		}
		for k, raw := range recs {
			var v struct {
				AccessToken  string `json:"access_token"`
				RefreshToken string `json:"refresh_token"`
			}
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("sessions file: %v", err)
			}
			for kind, tok := range map[string]string{"access": v.AccessToken, "refresh": v.RefreshToken} {
				if len(tok) >= 8 {
					issued[kind+" token of "+k] = tok
				}
			}
		}
		for _, o := range outputs {
			for what, tok := range issued {
				if strings.Contains(o.body, tok) {
					t.Errorf("%s leaks the %s", o.name, what)
				}
			}
		}
		add("sessions file", 200, string(b))
	} else {
		t.Errorf("no sessions file in data_dir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data", "login-budgets.json")); err == nil {
		add("login budgets file", 200, string(b))
	}

	hits := 0
	for _, o := range outputs {
		for what, s := range secrets {
			if strings.Contains(o.body, s) {
				hits++
				i := strings.Index(o.body, s)
				from, to := max(0, i-200), min(len(o.body), i+len(s)+100)
				t.Errorf("%s leaks the %s: …%s…", o.name, what, o.body[from:to])
			}
		}
	}
	total := 0
	for _, o := range outputs {
		total += len(o.body)
	}
	t.Logf("%d outputs, %d bytes searched for %d secrets: %d hits", len(outputs), total, len(secrets), hits)
	if !strings.Contains(logs.String(), "configuration not loaded") || total < 10000 {
		t.Fatalf("the test did not see what it should have (log and pages too small: %d bytes)", total)
	}
}
