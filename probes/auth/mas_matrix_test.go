package auth_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

func stepDetail(r probes.Result, name string) string {
	for _, s := range r.Steps {
		if s.Name == name {
			return s.Detail
		}
	}
	return ""
}

// TestMASLoginMatrix logs a tenant in with mas_oidc against the emulator
// under every combination of MAS's settings that change the pages: password
// login on/off × 1 or 2 providers × localpart import ignore/suggest/force/
// require × display name imported or not × first login or already linked
// (64 cells), and checks that the steps name the pages met.
func TestMASLoginMatrix(t *testing.T) {
	for _, passwords := range []bool{true, false} {
		for _, providers := range []int{1, 2} {
			for _, localpart := range []string{masemu.ImportIgnore, masemu.ImportSuggest, masemu.ImportForce, masemu.ImportRequire} {
				for _, dnImported := range []bool{false, true} {
					name := fmt.Sprintf("passwords=%v/providers=%d/localpart=%s/displayname_imported=%v", passwords, providers, localpart, dnImported)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						matrixCell(t, passwords, providers, localpart, dnImported)
					})
				}
			}
		}
	}
}

func matrixCell(t *testing.T, passwords bool, providers int, localpart string, dnImported bool) {
	opts := masemu.Options{PasswordsDisabled: !passwords, Providers: providers, LocalpartImport: localpart}
	if dnImported {
		opts.DisplayNameImport = masemu.ImportSuggest
	}
	env := newMASEnv(t, opts, func(c *config.MAS) {
		if providers > 1 {
			c.Upstream.Provider = strings.ToLower(masemu.ProviderName(2)) // chosen by name, case-insensitive
		}
	})
	env.acct.TenantName = "Acme Events"
	user := env.acct.Config.User
	loginPage := passwords || providers > 1

	t.Run("first", func(t *testing.T) {
		res, _ := env.login(t)
		requireOK(t, res)
		assertNoSecrets(t, res)
		want := []string{"authorize", "mas_login", "upstream_authorize", "provider_authorize", "upstream_callback",
			"account_link", "account_create", "register_finish", "consent", "consent_submit", "token_exchange", "token_whoami"}
		if !dnImported {
			want = append(want, "display_name", "display_name_submit")
		}
		for _, s := range want {
			if !hasStep(res, s) {
				t.Errorf("no %s step: %v", s, stepNames(res))
			}
		}
		if dnImported && hasStep(res, "display_name") {
			t.Errorf("display-name step although MAS imported the name: %v", stepNames(res))
		}
		if got := strings.Contains(stepDetail(res, "mas_login"), "login page: provider"); got != loginPage {
			t.Errorf("mas_login %q: login page met = %v, want %v", stepDetail(res, "mas_login"), got, loginPage)
		}
		if providers > 1 && !strings.Contains(stepDetail(res, "mas_login"), "provider "+masemu.ProviderName(2)) {
			t.Errorf("provider not chosen by name: %q", stepDetail(res, "mas_login"))
		}
		wantUser := map[string]string{masemu.ImportIgnore: "username filled", masemu.ImportSuggest: "username suggested by MAS",
			masemu.ImportForce: "username set by the provider", masemu.ImportRequire: "username set by the provider"}[localpart]
		if d := stepDetail(res, "account_link"); !strings.Contains(d, wantUser) || !strings.Contains(d, "terms accepted") {
			t.Errorf("account_link %q, want %q and terms accepted", d, wantUser)
		}
		wantName := "Acme Events"
		if dnImported {
			wantName = "Bot of acme"
		}
		if got := env.emu.UserDisplayName(user); got != wantName {
			t.Errorf("display name %q, want %q", got, wantName)
		}
		if reqs := strings.Join(env.emu.Requests(), ","); strings.Contains(reqs, "/logout") || strings.Contains(reqs, "POST /login") {
			t.Errorf("the client submitted a logout or password form: %s", reqs)
		}
	})
	t.Run("linked", func(t *testing.T) {
		res, _ := env.login(t)
		requireOK(t, res)
		for _, s := range []string{"account_create", "register_finish", "display_name"} {
			if hasStep(res, s) {
				t.Errorf("already linked account met %s: %v", s, stepNames(res))
			}
		}
		for _, s := range []string{"mas_login", "upstream_callback", "account_link", "consent_submit", "token_revoke"} {
			if !hasStep(res, s) {
				t.Errorf("no %s step: %v", s, stepNames(res))
			}
		}
		if n := len(env.emu.ActiveSessions(user)); n != 1 {
			t.Errorf("%d active sessions after the second login, want 1 (the first revoked)", n)
		}
	})
}

// Done-when 2: a scope MAS refuses and a reached session_limit end the run
// at once with class policy, MAS's message in the detail, and no request to
// /logout.
func TestMASPolicyViolation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  masemu.Options
		tweak func(*config.MAS)
		setup func(*masEnv)
		msg   string
	}{
		{name: "scope not allowed", tweak: func(c *config.MAS) { c.Scopes = "openid email profile" },
			msg: "denied by the policy enforced by this service"},
		{name: "session limit", opts: masemu.Options{SessionLimit: 1}, setup: func(env *masEnv) {
			// Another client of the bot's holds the one session allowed.
			other := env.bot(t, "acme", "openmeet-bot-acme", config.MethodMASOIDC)
			other.Key = "acme/elsewhere"
			mgr := auth.NewManager(env.mgr.HTTP)
			auth.RegisterMAS(mgr, env.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := mgr.Login(ctx, other, probes.NewRecorder("x", "login", "acme")); err != nil {
				t.Fatal(err)
			}
		}, msg: "Device limit reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newMASEnv(t, tc.opts, tc.tweak)
			if tc.setup != nil {
				tc.setup(env)
			}
			before := len(env.emu.Requests())
			t0 := time.Now()
			res, _ := env.login(t)
			requireFail(t, res, "policy_violation", auth.ClassPolicy)
			if !strings.Contains(res.Error, tc.msg) {
				t.Errorf("error %q does not carry MAS's message %q", res.Error, tc.msg)
			}
			if d := time.Since(t0); d > 15*time.Second {
				t.Errorf("took %v", d)
			}
			for _, r := range env.emu.Requests()[before:] {
				if strings.Contains(r, "/logout") {
					t.Errorf("the client requested %s", r)
				}
			}
		})
	}
}

// An unknown page fails with its title and URL, never its HTML; several
// providers without mas.upstream.provider fail as config naming them.
func TestMASUnknownPageAndProviderChoice(t *testing.T) {
	env := newMASEnv(t, masemu.Options{Providers: 2}, nil)
	res, _ := env.login(t)
	requireFail(t, res, "mas_login", probes.ClassConfig)
	for _, want := range []string{`"OpenMeet"`, `"OpenMeet 2"`, masemu.ProviderID(2), "mas.upstream.provider"} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("error %q does not name %s", res.Error, want)
		}
	}
	env = newMASEnv(t, masemu.Options{Providers: 2}, func(c *config.MAS) { c.Upstream.Provider = "Keycloak" })
	res, _ = env.login(t)
	requireFail(t, res, "mas_login", probes.ClassConfig)
	env = newMASEnv(t, masemu.Options{Providers: 2}, func(c *config.MAS) { c.Upstream.Provider = masemu.ProviderID(2) })
	res, _ = env.login(t)
	requireOK(t, res)
}

// Done-when 3 (daemon part): 100 consecutive fresh logins of one tenant
// leave at most 2 active sessions at MAS. 100 logins in a row need the
// provider's non-production token limit (1000 per minute).
func TestMASRepeatedLoginsDoNotPileUpSessions(t *testing.T) {
	env := newMASEnv(t, masemu.Options{ProviderTokenLimit: 1000}, nil)
	for i := 0; i < 100; i++ {
		res, _ := env.login(t)
		requireOK(t, res)
		if i > 0 && res.Counts[auth.CountRevocationPrefix+"success"] != 1 {
			t.Fatalf("login %d: revocation counts %v, steps %v", i, res.Counts, stepNames(res))
		}
	}
	if n := len(env.emu.ActiveSessions(env.acct.Config.User)); n > 2 {
		t.Fatalf("%d active sessions after 100 logins", n)
	}
	// SIGTERM: the daemon revokes what it holds.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, failed := env.mgr.RevokeAll(ctx); ok != 1 || failed != 0 {
		t.Fatalf("RevokeAll: %d ok, %d failed", ok, failed)
	}
	if n := len(env.emu.ActiveSessions(env.acct.Config.User)); n != 0 {
		t.Fatalf("%d active sessions after RevokeAll", n)
	}
}

// A failed revocation is a soft step: the login still succeeds.
func TestMASRevocationFailureDoesNotFailTheRun(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	res, _ := env.login(t)
	requireOK(t, res)
	env.mgr.HTTP = &http.Client{Transport: revokeDown{env.mgr.HTTP.Transport}}
	res, _ = env.login(t)
	requireOK(t, res)
	var rs probes.Step
	for _, s := range res.Steps {
		if s.Name == "token_revoke" {
			rs = s
		}
	}
	if rs.OK || rs.Class != probes.ClassHTTP5xx || res.Counts[auth.CountRevocationPrefix+"failure"] != 1 {
		t.Fatalf("revoke step %+v counts %v", rs, res.Counts)
	}
	assertNoSecrets(t, res)
}

// revokeDown answers 503 at the revocation endpoint.
type revokeDown struct{ base http.RoundTripper }

func (r revokeDown) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/oauth2/revoke") {
		if req.Body != nil {
			req.Body.Close()
		}
		return &http.Response{StatusCode: 503, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
	}
	return r.base.RoundTrip(req)
}

// The provider answering with response_mode form_post: the client submits
// the auto-posting form to /upstream/callback/<id>.
func TestMASFormPostResponseMode(t *testing.T) {
	env := newMASEnv(t, masemu.Options{ResponseMode: masemu.ResponseModeFormPost, ForwardLoginHint: true}, nil)
	res, _ := env.login(t)
	requireOK(t, res)
	if !strings.Contains(stepDetail(res, "provider_authorize"), "auto-submitted form_post") {
		t.Errorf("provider_authorize %q", stepDetail(res, "provider_authorize"))
	}
	if !strings.Contains(strings.Join(env.emu.Requests(), ","), "POST /upstream/callback/") {
		t.Error("no POST to the callback")
	}
}

// Done-when 4: a refresh revokes the old access token (the homeserver front
// refuses it) and the run goes on with the new one.
func TestMASRefreshRevokesOldAccessToken(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	res, old := env.login(t)
	requireOK(t, res)
	oldCopy := *old
	env.mgr.RefreshBefore = time.Hour // the 300 s token is "about to expire": Session refreshes
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec := probes.NewRecorder("roundtrip", "roundtrip", env.acct.Tenant)
	sess, err := env.mgr.Session(ctx, env.acct, rec)
	if err == nil {
		err = rec.Step("whoami", func() error { return env.mgr.Whoami(ctx, env.acct, sess) })
	}
	res = rec.Finish()
	requireOK(t, res)
	if !hasStep(res, "token_refresh") || sess.AccessToken == oldCopy.AccessToken {
		t.Fatalf("no refresh: %v", stepNames(res))
	}
	if err := env.mgr.Whoami(ctx, env.acct, &oldCopy); probes.Classify(err) != probes.ClassAuthFailed {
		t.Fatalf("the old access token after a refresh: %v, want M_UNKNOWN_TOKEN", err)
	}
	if n := len(env.emu.ActiveSessions(env.acct.Config.User)); n != 1 {
		t.Errorf("%d sessions after a refresh", n)
	}
}

// pageSwap answers GET /login with a page of its own.
type pageSwap struct {
	base http.RoundTripper
	body string
}

func (p pageSwap) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/login") {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/html; charset=utf-8"}},
			Body: io.NopCloser(strings.NewReader(p.body)), Request: req}, nil
	}
	return p.base.RoundTrip(req)
}

// An unknown page fails with its title, heading and URL, never its HTML.
func TestMASUnknownPage(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	env.mgr.HTTP = &http.Client{Transport: pageSwap{env.mgr.HTTP.Transport,
		`<html><head><title>Maintenance</title></head><body><h1>Back soon</h1><p>html-body-marker</p>
<form method="post" action="/somewhere"><input name="q" type="text"></form></body></html>`}}
	res, _ := env.login(t)
	requireFail(t, res, "mas_login", auth.ClassAuthorize)
	for _, want := range []string{"unexpected page", "/login", `"Maintenance"`, `"Back soon"`} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("error %q lacks %s", res.Error, want)
		}
	}
	if strings.Contains(res.Error, "html-body-marker") || strings.Contains(res.Error, "<") {
		t.Errorf("error carries the page's HTML: %q", res.Error)
	}
}
