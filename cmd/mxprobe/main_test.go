package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckConfigReportsEveryProblem is the foundation's "Done when" 3.
func TestCheckConfigReportsEveryProblem(t *testing.T) {
	cfg := writeFile(t, "bad.yml", `global:
  homeserver_url: http://127.0.0.1:8008
  unknown_key: 1
tenants:
  - id: acme
    bot:
      user: openmeet-bot-acme
      password: file-SECRET-pw
probes:
  - name: login
    type: login
    timeout: 10parsecs
  - name: versions
    type: versions
    schedule: "every now and then"
`)
	t.Setenv("TENANTS_B64", "")
	code, out, errOut := runCLI(t, "check-config", "--config.file", cfg)
	if code == 0 {
		t.Fatalf("bad config accepted: %s", out)
	}
	for _, want := range []string{"bad.yml:3: field unknown_key not found", "bad.yml:12: invalid duration", "bad.yml:15: invalid schedule", "3 configuration problem(s)"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}

	good := writeFile(t, "good.yml", "global:\n  homeserver_url: http://127.0.0.1:8008\n")
	for name, tc := range map[string]struct{ value, want string }{
		"not base64": {"!!!env-SECRET!!!", "TENANTS_B64: not valid base64"},
		"not JSON":   {base64.StdEncoding.EncodeToString([]byte(`[{"id":"a","botUser":{"password":env-SECRET`)), "TENANTS_B64: decoded value is not a JSON array of tenants"},
		"no password": {base64.StdEncoding.EncodeToString([]byte(`[{"id":"a","botUser":{"password":"env-SECRET"}},{"id":"b","botUser":{"email":"x@y.z"}}]`)),
			`TENANTS_B64[1] (id "b"): botUser.password: missing`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("TENANTS_B64", tc.value)
			code, out, errOut := runCLI(t, "check-config", "--config.file", good)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("code %d, stderr:\n%s", code, errOut)
			}
			if strings.Contains(out+errOut, "SECRET") {
				t.Fatalf("secret echoed:\n%s%s", out, errOut)
			}
		})
	}
	t.Setenv("TENANTS_B64", "")
	if code, out, errOut := runCLI(t, "check-config", "--config.file", good); code != 0 || !strings.Contains(out, "OK") {
		t.Fatalf("good config: %d %s %s", code, out, errOut)
	}
}

func loginConfig(hs, serverName string, tenants map[string][2]string, schedule string) string {
	var b strings.Builder
	// Opted out of synapse_limits: a bare Dendrite, logins every few seconds
	// and wrong passwords on purpose.
	fmt.Fprintf(&b, "global:\n  homeserver_url: %s\n  server_name: %s\n  concurrency: 4\n  jitter: 0\n  shutdown_grace: 2s\nsynapse_limits:\n  disabled: true\ntenants:\n", hs, serverName)
	for id, up := range tenants {
		fmt.Fprintf(&b, "  - id: %s\n    bot:\n      user: %s\n      password: %q\n", id, up[0], up[1])
	}
	fmt.Fprintf(&b, "probes:\n  - name: login\n    type: login\n    schedule: %q\n    timeout: 5s\n  - name: versions\n    type: versions\n    schedule: %q\n    timeout: 5s\n", schedule, schedule)
	return b.String()
}

// TestRunLoginCLI is "Done when" 5: a human-readable result with step
// timings and exit 0/1, and the same as JSON.
func TestRunLoginCLI(t *testing.T) {
	d := testenv.SharedDendrite(t)
	u1, p1 := d.User(t, "openmeet-bot-good")
	u2, _ := d.User(t, "openmeet-bot-bad")
	cfg := writeFile(t, "c.yml", loginConfig(d.URL, d.ServerName, map[string][2]string{
		"good": {u1, p1}, "bad": {u2, "wrong-SECRET-password"},
	}, "@every 1m"))

	code, out, errOut := runCLI(t, "run", "login", "--tenant", "good", "--config.file", cfg)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"probe login  tenant good  OK", "STEP", "login", "whoami", "ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}

	code, out, errOut = runCLI(t, "run", "login", "--tenant", "bad", "--config.file", cfg, "--output", "json")
	if code != 1 || !strings.Contains(errOut, "bad") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var r probes.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if r.Outcome != probes.OutcomeFailure || r.Class != probes.ClassAuthFailed || r.FailedStep != "login" || len(r.Steps) != 1 || r.Steps[0].Duration <= 0 {
		t.Fatalf("result: %+v", r)
	}
	if strings.Contains(out+errOut, "SECRET") {
		t.Fatal("password in output")
	}

	code, out, _ = runCLI(t, "run", "login", "--all", "--config.file", cfg, "--output", "json")
	var all []probes.Result
	if code != 1 || json.Unmarshal([]byte(out), &all) != nil || len(all) != 2 {
		t.Fatalf("--all: exit %d\n%s", code, out)
	}
}

// TestIdentityMismatch: whoami naming another domain fails as identity_mismatch.
func TestIdentityMismatch(t *testing.T) {
	d := testenv.SharedDendrite(t)
	u, p := d.User(t, "openmeet-bot-dom")
	cfg := writeFile(t, "c.yml", loginConfig(d.URL, "other.example.org", map[string][2]string{"dom": {u, p}}, "@every 1m"))
	code, out, _ := runCLI(t, "run", "login", "--tenant", "dom", "--config.file", cfg, "-o", "json")
	var r probes.Result
	_ = json.Unmarshal([]byte(out), &r)
	if code != 1 || r.Class != probes.ClassIdentityMismatch || r.FailedStep != "whoami" {
		t.Fatalf("exit %d: %+v", code, r)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func latest(d *daemon, probe, tenant string) (probes.Result, bool) {
	e, ok := d.history.Get(probe, tenant)
	if !ok {
		return probes.Result{}, false
	}
	return e.Latest, true
}

func scrape(t *testing.T, d *daemon) string {
	t.Helper()
	rr := httptest.NewRecorder()
	d.web.Handler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rr.Body)
	return string(b)
}

// TestDaemonWrongPasswordOutageAndRecovery is "Done when" 4: one tenant's
// wrong password fails as auth_failed while the other keeps succeeding; a
// stopped homeserver makes probes report unreachable while the daemon keeps
// running; when it comes back, probes recover without a restart.
func TestDaemonWrongPasswordOutageAndRecovery(t *testing.T) {
	hs := testenv.NewDendrite(t, testenv.DendriteOptions{})
	u1, p1 := hs.User(t, "openmeet-bot-a")
	u2, _ := hs.User(t, "openmeet-bot-b")
	cfgPath := writeFile(t, "c.yml", loginConfig(hs.URL, hs.ServerName, map[string][2]string{
		"a": {u1, p1}, "b": {u2, "not-the-SECRET"},
	}, "@every 1s"))
	d, err := newDaemon(&cli{configFile: cfgPath}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	defer d.shutdown()

	waitFor(t, "first results", 15*time.Second, func() bool {
		a, okA := latest(d, "login", "a")
		b, okB := latest(d, "login", "b")
		return okA && okB && a.Outcome == probes.OutcomeSuccess && b.Class == probes.ClassAuthFailed
	})
	m := scrape(t, d)
	for _, want := range []string{`mxprobe_probe_success{probe="login",tenant="a"} 1`, `mxprobe_probe_success{probe="login",tenant="b"} 0`,
		`mxprobe_probe_failed_step{class="auth_failed",probe="login",step="login",tenant="b"} 1`, "mxprobe_build_info{"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(m, "SECRET") {
		t.Fatal("secret in metrics")
	}

	hs.Pause()
	waitFor(t, "unreachable", 15*time.Second, func() bool {
		a, _ := latest(d, "login", "a")
		v, _ := latest(d, "versions", "")
		return a.Class == probes.ClassUnreachable && v.Class == probes.ClassUnreachable
	})
	if !d.ready.Load() && d.engine == nil {
		t.Fatal("daemon stopped")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := hs.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "recovery", 20*time.Second, func() bool {
		a, _ := latest(d, "login", "a")
		v, _ := latest(d, "versions", "")
		b, _ := latest(d, "login", "b")
		return a.Outcome == probes.OutcomeSuccess && v.Outcome == probes.OutcomeSuccess && b.Class == probes.ClassAuthFailed
	})
}

// TestReloadKeepsOldConfigOnError: a bad new config is reported and the
// old one keeps running.
func TestReloadKeepsOldConfigOnError(t *testing.T) {
	cfgPath := writeFile(t, "c.yml", "global:\n  homeserver_url: http://127.0.0.1:1\nprobes:\n  - name: versions\n    type: versions\n    schedule: \"@every 1h\"\n")
	var logs testenv.SyncBuffer
	d, err := newDaemon(&cli{configFile: cfgPath, web: webHardening{lifecycle: true}}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	defer d.shutdown()
	if err := os.WriteFile(cfgPath, []byte("global:\n  bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rr := httptest.NewRecorder()
	d.web.Handler().ServeHTTP(rr, httptest.NewRequest("POST", "/-/reload", nil))
	// The caller learns that it failed; the details are in the log only.
	if rr.Code != 500 || strings.TrimSpace(rr.Body.String()) != "reload failed, see the log" {
		t.Fatalf("reload answer %d: %s", rr.Code, rr.Body)
	}
	if !strings.Contains(logs.String(), "field bogus not found") {
		t.Fatalf("reload error not logged:\n%s", logs.String())
	}
	if !strings.Contains(scrape(t, d), "mxprobe_config_last_reload_successful 0") {
		t.Fatal("reload failure not in metrics")
	}
	if _, ok := d.engine.Job("versions"); !ok {
		t.Fatal("old config not kept")
	}
}

// --help, -h and help print usage on stdout and exit 0, for the program and
// each command, and never run anything (check-config does not check, serve
// does not start, run does not probe).
func TestHelpPrintsUsageAndRunsNothing(t *testing.T) {
	// A config file that would make check-config and run fail if they ran.
	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("nonsense: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "usage: mxprobe [<flags>] <command>"},
		{[]string{"-h"}, "usage: mxprobe [<flags>] <command>"},
		{[]string{"help"}, "usage: mxprobe [<flags>] <command>"},
		{[]string{"serve", "--help"}, "usage: mxprobe serve"},
		{[]string{"--config.file", bad, "serve", "-h"}, "usage: mxprobe serve"},
		{[]string{"run", "--help"}, "usage: mxprobe run"},
		{[]string{"help", "run"}, "usage: mxprobe run"},
		{[]string{"--config.file", bad, "check-config", "--help"}, "usage: mxprobe check-config"},
		{[]string{"--config.file", bad, "run", "login", "--all", "-h"}, "usage: mxprobe run"},
		// serve's flags are checked after parsing, never before help.
		{[]string{"serve", "--shard.count=0", "--help"}, "usage: mxprobe serve"},
	}
	for _, tc := range cases {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != 0 || !strings.Contains(out.String(), tc.want) || errOut.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q..., stderr %q", tc.args, code, firstLine(out.String()), errOut.String())
		}
		if strings.Contains(out.String(), "OK:") || strings.Contains(out.String(), "bad.yml") {
			t.Errorf("%v ran the command: %s", tc.args, out.String())
		}
	}
	// Help on a command that does not exist is kingpin's error and exit 1,
	// and nothing after it (kingpin would have exited there).
	var out, errOut bytes.Buffer
	if code := run([]string{"help", "nosuch"}, &out, &errOut); code != 1 || out.Len() != 0 ||
		strings.TrimSpace(errOut.String()) != `mxprobe: error: expected command but got "nosuch"` {
		t.Errorf("help nosuch: exit %d, stdout %q, stderr %q", code, firstLine(out.String()), errOut.String())
	}
	// Without help, the same bad file is an error: the cases above really
	// skipped the command.
	out.Reset()
	errOut.Reset()
	if code := run([]string{"--config.file", bad, "check-config"}, &out, &errOut); code == 0 {
		t.Fatalf("check-config of a broken file exited 0: %s", out.String())
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
