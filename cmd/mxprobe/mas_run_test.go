package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
)

// Done-when 3 (CLI part): ten consecutive `mxprobe run login` runs, each
// with its own session manager as a process has, leave at most 2 active MAS
// sessions for the bot: each run revokes the session it created before it
// ends. The first run meets the login page, the registration and the
// display-name step.
func TestRunLoginRevokesItsMASSession(t *testing.T) {
	emu, err := masemu.Start(masemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	const user, email, pw = "openmeet-bot-masdemo", "bot-masdemo@openmeet.net", "platform-pw"
	emu.AddUpstreamUser("masdemo", email, pw, user)
	cfg := writeFile(t, "mas.yml", fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
mas:
  public_url: %s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %s}
tenants:
  - id: masdemo
    name: Demo tenant
    bot: {method: mas_oidc, user: %s, email: %s, password: %s}
`, emu.HomeserverURL, emu.ServerName, emu.MASURL, emu.UpstreamURL, user, email, pw))
	for i := 0; i < 10; i++ {
		code, out, errOut := runCLI(t, "run", "login", "--tenant", "masdemo", "--config.file", cfg)
		if code != 0 {
			t.Fatalf("run %d: exit %d\n%s\n%s", i, code, out, errOut)
		}
		if i == 0 {
			t.Logf("first run:\n%s", out)
			for _, want := range []string{"mas_login", "login page: provider OpenMeet", "account_create", "display_name", "display name set"} {
				if !strings.Contains(out, want) {
					t.Errorf("first run does not show %q:\n%s", want, out)
				}
			}
		}
		if n := len(emu.ActiveSessions(user)); n > 2 {
			t.Fatalf("after run %d: %d active sessions", i+1, n)
		}
	}
	if n := len(emu.ActiveSessions(user)); n != 0 {
		t.Errorf("%d active sessions after 10 runs, want 0 (each run revokes its own)", n)
	}
	if got := emu.UserDisplayName(user); got != "Demo tenant" {
		t.Errorf("display name %q, want the tenant's name", got)
	}
}
