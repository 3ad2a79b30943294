package auth_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// The shared Dendrite lives as long as the test process: its account of
// @openmeet-bot-acme_acme is registered once.
var (
	acmeOnce sync.Once
	acmePW   string
	acmeErr  error
)

// Issue 13, done-when 4: a mas_oidc login through the emulated OpenMeet
// provider, with MAS configured as OpenMeet's (password login off, localpart
// import required, login_hint forwarded, prompt=none and max_age upstream), in front of a real Dendrite: the
// tenant's bot (slug openmeet-bot-acme, no user configured) ends up as
// @openmeet-bot-acme_acme, and whoami says so. The next run proves the
// session by refresh and whoami, and no platform session is left behind.
func TestOpenMeetLoginWhoamiNamesSlugTenantUser(t *testing.T) {
	d := testenv.SharedDendrite(t)
	testenv.MarkIntegration(t, "MAS emulator with the OpenMeet provider in front of Dendrite")
	const localpart = "openmeet-bot-acme_acme"
	acmeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		acmePW = "hs-" + auth.RandomID()
		_, acmeErr = d.Register(ctx, localpart, acmePW, false)
	})
	if acmeErr != nil {
		t.Fatalf("register %s at Dendrite: %v", localpart, acmeErr)
	}
	opts := masemu.OpenMeetOptions()
	opts.Dendrite = d
	emu, err := masemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	emu.UseHomeserverAccount(localpart, acmePW)
	emu.AddUpstreamUser("acme", "bot-acme@openmeet.net", "pw-acme", "openmeet-bot-acme")
	yml := fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
mas:
  public_url: %s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %s}
tenants:
  - id: acme
    bot: {method: mas_oidc, email: bot-acme@openmeet.net, password: pw-acme}
`, emu.HomeserverURL, d.ServerName, emu.MASURL, emu.UpstreamURL)
	cfg, err := config.Parse([]byte(yml), "openmeet-acme.yml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Tenants[0].Bot.MatrixUser; got != localpart {
		t.Fatalf("expected Matrix user %q, want %q", got, localpart)
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	auth.RegisterMAS(mgr, cfg.MAS)
	probe := &auth.LoginProbe{Name: "login", Manager: mgr, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := probe.Run(ctx, "acme")
	requireOK(t, first)
	want := "@" + localpart + ":" + d.ServerName
	if sess := mgr.Cached("acme/bot"); sess == nil || sess.UserID != want {
		t.Fatalf("whoami named %v, want %s", sess, want)
	}
	if !hasStep(first, "token_whoami") || !hasStep(first, "whoami") || !hasStep(first, auth.StepUpstreamLogout) {
		t.Errorf("steps %v", stepNames(first))
	}
	second := probe.Run(ctx, "acme")
	requireOK(t, second)
	if !hasStep(second, "token_refresh") || !hasStep(second, "whoami") || hasStep(second, "upstream_login") {
		t.Errorf("second run: want refresh and whoami only, steps %v", stepNames(second))
	}
	if n := emu.PlatformSessions("acme", "bot-acme@openmeet.net"); n != 0 {
		t.Errorf("%d live platform sessions", n)
	}
	if st := emu.Stats(); st.ProviderTokenRequests != 1 || st.ProviderTokenRateLimited != 0 {
		t.Errorf("stats %+v", st)
	}
	assertNoSecrets(t, first, "pw-acme")
	assertNoSecrets(t, second, "pw-acme")
}
