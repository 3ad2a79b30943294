package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
)

func masConfig(emu *masemu.Emulator, user, email, pw, schedule string) string {
	return fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
  jitter: 0
  shutdown_grace: 2s
mas:
  public_url: %s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %s}
tenants:
  - id: masdemo
    name: Demo tenant
    bot: {method: mas_oidc, user: %s, email: %s, password: %s}
probes:
  - name: login
    type: login
    schedule: %q
    timeout: 10s
`, emu.HomeserverURL, emu.ServerName, emu.MASURL, emu.UpstreamURL, user, email, pw, schedule)
}

// Ten consecutive `mxprobe run login` processes leave at most 2 active MAS
// sessions for the bot: each run revokes the session it created before it
// exits. The first run meets the login page, the registration and the
// display-name step. Ten processes in a row are more full logins than the
// provider's production token limit allows in a minute (each process has a
// login budget of its own): the provider runs with its non-production limit.
func TestRunLoginRevokesItsMASSession(t *testing.T) {
	emu, err := masemu.Start(masemu.Options{ProviderTokenLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	const user, email, pw = "openmeet-bot-masdemo", "bot-masdemo@openmeet.net", "platform-pw"
	emu.AddUpstreamUser("masdemo", email, pw, user)
	// Under the openmeet adapter the user is the slug; the Matrix user is
	// <slug>_<tenant>.
	local := masemu.UpstreamLocalpart(user, "masdemo")
	cfg := writeFile(t, "mas.yml", masConfig(emu, user, email, pw, "@every 1m"))
	bin := testenv.BuildMxprobe(t)
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cmd := exec.CommandContext(ctx, bin, "run", "login", "--tenant", "masdemo", "--config.file", cfg)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		out := stdout.String()
		if err != nil {
			t.Fatalf("run %d: %v\n%s\n%s", i, err, out, stderr.String())
		}
		if i == 0 {
			t.Logf("first run:\n%s", out)
			for _, want := range []string{"mas_login", "login page: provider OpenMeet", "account_create", "display_name", "display name set"} {
				if !strings.Contains(out, want) {
					t.Errorf("first run does not show %q:\n%s", want, out)
				}
			}
		}
		if n := len(emu.ActiveSessions(local)); n > 2 {
			t.Fatalf("after run %d: %d active sessions", i+1, n)
		}
	}
	if n := len(emu.ActiveSessions(local)); n != 0 {
		t.Errorf("%d active sessions after 10 runs, want 0 (each run revokes its own)", n)
	}
	if got := emu.UserDisplayName(local); got != "Demo tenant" {
		t.Errorf("display name %q, want the tenant's name", got)
	}
}

// The daemon's scheduled logins replace and revoke their sessions, and on
// shutdown (SIGTERM) the daemon revokes what it holds.
func TestDaemonRevokesMASSessionsOnShutdown(t *testing.T) {
	emu, err := masemu.Start(masemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	const user, email, pw = "openmeet-bot-masdemo", "bot-masdemo@openmeet.net", "platform-pw"
	emu.AddUpstreamUser("masdemo", email, pw, user)
	// Under the openmeet adapter the user is the slug; the Matrix user is
	// <slug>_<tenant>.
	local := masemu.UpstreamLocalpart(user, "masdemo")
	d, err := newDaemon(&cli{configFile: writeFile(t, "mas.yml", masConfig(emu, user, email, pw, "@every 1s"))}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	entry := func() history.Entry { e, _ := d.history.Get("login", "masdemo"); return e }
	waitFor(t, "three scheduled logins", 30*time.Second, func() bool { return len(entry().Recent) >= 3 })
	for _, r := range entry().Recent {
		if r.Outcome() != probes.OutcomeSuccess {
			f := entry().LastFailure
			t.Fatalf("login failed at %s (%s): %s", f.FailedStep, f.Class, f.Error)
		}
	}
	if n := len(emu.ActiveSessions(local)); n > 2 {
		t.Errorf("%d active sessions while the daemon runs", n)
	}
	d.shutdown()
	if n := len(emu.ActiveSessions(local)); n != 0 {
		t.Errorf("%d active sessions after shutdown, want 0", n)
	}
}

// Issue 22, done-when 6: a file tenant that names its bot's user under the
// openmeet adapter names the platform slug; the provider makes the Matrix
// user <slug>_<tenant>, and so does mxprobe's expectation (no
// identity_mismatch). check-config prints the expected user.
func TestOpenMeetFileTenantUserIsTheSlug(t *testing.T) {
	emu, err := masemu.Start(masemu.OpenMeetOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	const slug, email, pw = "openmeet-bot-acme", "bot-acme@openmeet.net", "platform-pw"
	emu.AddUpstreamUser("acme", email, pw, slug)
	cfg := strings.Replace(masConfig(emu, slug, email, pw, "@every 1m"), "id: masdemo", "id: acme", 1)
	path := writeFile(t, "mas.yml", cfg)
	code, out, errOut := runCLI(t, "run", "login", "--tenant", "acme", "--output", "json", "--config.file", path)
	if code != 0 {
		t.Fatalf("run login: exit %d\n%s\n%s", code, out, errOut)
	}
	want := "@openmeet-bot-acme_acme:" + emu.ServerName
	if n := len(emu.ActiveSessions("openmeet-bot-acme_acme")); n != 0 {
		t.Errorf("%d sessions left by the CLI run", n)
	}
	if emu.UserDisplayName("openmeet-bot-acme_acme") == "" {
		t.Errorf("the bot %s was not registered as the provider names it", want)
	}
	code, out, errOut = runCLI(t, "check-config", "--config.file", path)
	if code != 0 || !strings.Contains(out, "tenant acme: bot logs in as "+want) {
		t.Errorf("check-config: exit %d, output lacks the expected user %s:\n%s%s", code, want, out, errOut)
	}
}
