package auth_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// masEnv is an emulator with one bot, a manager with the MAS methods, and
// the bot's account.
type masEnv struct {
	emu  *masemu.Emulator
	mgr  *auth.Manager
	cfg  config.MAS
	acct auth.Account
}

const botPassword = "bot-secret-pw-1"

func newMASEnv(t testing.TB, opts masemu.Options, tweak func(*config.MAS)) *masEnv {
	t.Helper()
	emu, err := masemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	return masEnvFor(t, emu, tweak)
}

// masEnvFor is newMASEnv around an emulator already started (for example
// with a delegating Synapse behind it).
func masEnvFor(t testing.TB, emu *masemu.Emulator, tweak func(*config.MAS)) *masEnv {
	t.Helper()
	cfg := config.MAS{
		PublicURL:   emu.MASURL,
		RedirectURI: "http://localhost:9005/auth/matrix/callback",
		Scopes:      "openid email",
		ClientURI:   config.DefaultMASClientURI,
		ClientName:  "mxprobe-test",
		Upstream:    config.Upstream{Adapter: config.UpstreamOpenMeet, APIURL: emu.UpstreamURL},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	if cfg.Upstream.Adapter == config.UpstreamForm && cfg.Upstream.Origin == "" && cfg.Upstream.APIURL == "" {
		// The form adapter submits the password only on the provider's
		// configured origin: the emulator's platform.
		cfg.Upstream.Origin = emu.UpstreamURL
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	auth.RegisterMAS(mgr, cfg)
	env := &masEnv{emu: emu, mgr: mgr, cfg: cfg}
	env.acct = env.bot(t, "acme", "openmeet-bot-acme", config.MethodMASOIDC)
	return env
}

// bot adds a platform account (slug) for a tenant and returns its mxprobe
// account, whose user is the Matrix localpart the provider makes of it.
func (e *masEnv) bot(t testing.TB, tenant, slug, method string) auth.Account {
	email := "bot-" + tenant + "@openmeet.net"
	e.emu.AddUpstreamUser(tenant, email, botPassword, slug)
	localpart := masemu.UpstreamLocalpart(slug, tenant)
	return auth.Account{
		Key: tenant + "/bot", Tenant: tenant, Role: "bot", HomeserverURL: e.emu.HomeserverURL,
		ServerName: e.emu.ServerName, Password: botPassword,
		Config: config.Account{Method: method, User: localpart, Email: email},
	}
}

func (e *masEnv) login(t testing.TB) (probes.Result, *auth.Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec := probes.NewRecorder("login", "login", e.acct.Tenant)
	sess, _ := e.mgr.Login(ctx, e.acct, rec)
	return rec.Finish(), sess
}

func stepNames(r probes.Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

func hasStep(r probes.Result, name string) bool {
	_, ok := r.StepDuration(name)
	return ok
}

// assertNoSecrets fails when a result (as JSON, the form every sink sees)
// contains the password or any token/code the emulator issued.
func assertNoSecrets(t *testing.T, r probes.Result, extra ...string) {
	t.Helper()
	b, _ := json.Marshal(r)
	s := string(b)
	for _, bad := range append([]string{botPassword, "mat_", "mar_", "mct_", "code=", "code_verifier", "loginToken=", "state="}, extra...) {
		if bad != "" && strings.Contains(s, bad) {
			t.Errorf("result leaks %q: %s", bad, s)
		}
	}
}

func requireOK(t *testing.T, r probes.Result) {
	t.Helper()
	if !r.OK() {
		t.Fatalf("login failed at %s (%s): %s\nsteps: %v", r.FailedStep, r.Class, r.Error, stepNames(r))
	}
}

func requireFail(t *testing.T, r probes.Result, step string, class probes.Class) {
	t.Helper()
	if r.OK() {
		t.Fatalf("login succeeded, want failure at %s/%s; steps %v", step, class, stepNames(r))
	}
	if r.FailedStep != step || r.Class != class {
		t.Fatalf("failed at %s (%s): %s; want %s (%s)\nsteps: %v", r.FailedStep, r.Class, r.Error, step, class, stepNames(r))
	}
	assertNoSecrets(t, r)
}

func TestMASLoginFirstAndSecond(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	res, sess := env.login(t)
	requireOK(t, res)
	assertNoSecrets(t, res)
	for _, want := range []string{"upstream_login", "discovery", "registration", "authorize", "mas_login",
		"upstream_authorize", "provider_authorize", "upstream_callback", "account_link", "account_create",
		"consent", "consent_submit", "token_exchange", "token_whoami"} {
		if !hasStep(res, want) {
			t.Errorf("first login has no %s step: %v", want, stepNames(res))
		}
	}
	if sess.UserID != "@openmeet-bot-acme_acme:"+env.emu.ServerName || sess.RefreshToken == "" || sess.Expiry.IsZero() {
		t.Fatalf("session: %v expiry %v refresh %v", sess, sess.Expiry, sess.RefreshToken != "")
	}
	if !env.emu.HasUser("openmeet-bot-acme_acme") {
		t.Fatal("MAS has no account after the first login")
	}
	// Second login: no account creation form, cached discovery and client.
	res2, _ := env.login(t)
	requireOK(t, res2)
	if hasStep(res2, "account_create") {
		t.Errorf("second login created an account again: %v", stepNames(res2))
	}
	for _, s := range res2.Steps {
		if (s.Name == "discovery" || s.Name == "registration") && !strings.Contains(s.Detail, "cached") {
			t.Errorf("%s not cached on the second login: %q", s.Name, s.Detail)
		}
	}
	if st := env.emu.Stats(); st.Registrations != 1 || st.AccountsCreated != 1 || st.CodesIssued != 2 {
		t.Errorf("emulator stats %+v", st)
	}
}

func TestMASLoginStableScopesWebClient(t *testing.T) {
	env := newMASEnv(t, masemu.Options{NoTerms: true}, func(c *config.MAS) {
		c.StableScopes = true
		c.RedirectURI = "https://bots.example.org/auth/matrix/callback"
		c.ClientURI = "https://example.org/"
	})
	res, _ := env.login(t)
	requireOK(t, res)
}

func TestMASLoginFormAdapter(t *testing.T) {
	env := newMASEnv(t, masemu.Options{ProviderPasswordForm: true}, func(c *config.MAS) {
		c.Upstream = config.Upstream{Adapter: config.UpstreamForm, UsernameField: "email", PasswordField: "password"}
	})
	res, _ := env.login(t)
	requireOK(t, res)
	if !hasStep(res, "provider_login") {
		t.Errorf("no provider_login step: %v", stepNames(res))
	}
	// Wrong password: the provider shows its form again.
	env.emu.SetUpstreamPassword("acme", env.acct.Config.Email, "rotated")
	env.mgr.Forget(env.acct.Key)
	res, _ = env.login(t)
	requireFail(t, res, "provider_login", auth.ClassUpstreamLogin)
}

func TestMASNegative(t *testing.T) {
	cases := []struct {
		name  string
		opts  masemu.Options
		tweak func(*config.MAS)
		setup func(env *masEnv)
		step  string
		class probes.Class
		msg   string
	}{
		{name: "wrong bot password", setup: func(env *masEnv) { env.acct.Password = "wrong-password" },
			step: "upstream_login", class: auth.ClassUpstreamLogin, msg: "HTTP 422"},
		{name: "upstream session expired", setup: func(env *masEnv) {
			env.emu.SetFaults(masemu.Faults{UpstreamSessionExpired: true})
		}, step: "provider_authorize", class: auth.ClassUpstreamLogin, msg: "shows a login form"},
		{name: "registration refused by policy", tweak: func(c *config.MAS) {
			c.RedirectURI = "https://evil.example.net/cb" // not on the client_uri host
			c.ClientURI = "https://example.org/"
		}, step: "registration", class: auth.ClassRegistration, msg: "invalid_redirect_uri"},
		{name: "consent csrf missing", setup: func(env *masEnv) {
			env.emu.SetFaults(masemu.Faults{ConsentWithoutCSRF: true})
		}, step: "consent", class: auth.ClassConsent, msg: "csrf"},
		{name: "username taken at MAS", setup: func(env *masEnv) {
			env.emu.SetMASPassword(env.acct.Config.User, "someone-else") // a MAS account already has the localpart
		}, step: "account_create", class: auth.ClassAccountLink, msg: "This username is already taken"},
		{name: "MAS down", setup: func(env *masEnv) { env.emu.StopMAS() },
			step: "registration", class: probes.ClassUnreachable},
		{name: "upstream down", setup: func(env *masEnv) { env.emu.StopUpstream() },
			step: "upstream_login", class: probes.ClassUnreachable},
		{name: "registration endpoint 503", setup: func(env *masEnv) {
			env.emu.SetFaults(masemu.Faults{RegistrationDown: true})
		}, step: "registration", class: probes.ClassHTTP5xx},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newMASEnv(t, tc.opts, tc.tweak)
			if tc.setup != nil {
				tc.setup(env)
			}
			res, _ := env.login(t)
			requireFail(t, res, tc.step, tc.class)
			if tc.msg != "" && !strings.Contains(res.Error, tc.msg) {
				t.Errorf("error %q does not mention %q", res.Error, tc.msg)
			}
		})
	}
}

// tamper rewrites token endpoint requests: replay sends the form once
// before the real request (the code is used twice), verifier replaces the
// PKCE verifier.
type tamper struct {
	base     http.RoundTripper
	replay   bool
	verifier string
}

func (tp *tamper) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/oauth2/token") || req.Body == nil {
		return tp.base.RoundTrip(req)
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	form, _ := url.ParseQuery(string(b))
	if form.Get("grant_type") == "authorization_code" {
		if tp.verifier != "" {
			form.Set("code_verifier", tp.verifier)
		}
		if tp.replay {
			first := req.Clone(req.Context())
			first.Body = io.NopCloser(strings.NewReader(form.Encode()))
			first.ContentLength = int64(len(form.Encode()))
			if resp, err := tp.base.RoundTrip(first); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	body := form.Encode()
	req = req.Clone(req.Context())
	req.Body = io.NopCloser(strings.NewReader(body))
	req.ContentLength = int64(len(body))
	return tp.base.RoundTrip(req)
}

func TestMASTokenExchangeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		tp   tamper
		msg  string
	}{
		{"code reused", tamper{replay: true}, "already used"},
		{"PKCE verifier wrong", tamper{verifier: "wrong-verifier-wrong-verifier-wrong-verifier-0"}, "PKCE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newMASEnv(t, masemu.Options{}, nil)
			tp := tc.tp
			tp.base = env.mgr.HTTP.Transport
			env.mgr.HTTP = &http.Client{Transport: &tp}
			res, _ := env.login(t)
			requireFail(t, res, "token_exchange", auth.ClassTokenExchange)
			if !strings.Contains(res.Error, "invalid_grant") || !strings.Contains(res.Error, tc.msg) {
				t.Errorf("error %q: want invalid_grant and %q", res.Error, tc.msg)
			}
		})
	}
}

func TestMASAuthMetadata404FallsBack(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	env.emu.SetFaults(masemu.Faults{AuthMetadata404: true})
	res, _ := env.login(t)
	requireOK(t, res)
	if d := res.Steps[0]; d.Name != "discovery" || !strings.Contains(d.Detail, "MAS well-known (fallback after auth_metadata HTTP 404, unstable auth_metadata HTTP 404)") {
		t.Errorf("discovery step: %+v", d)
	}
	// Without mas.public_url there is nothing to fall back to.
	env2 := newMASEnv(t, masemu.Options{}, func(c *config.MAS) { c.PublicURL = "" })
	env2.emu.SetFaults(masemu.Faults{AuthMetadata404: true})
	res, _ = env2.login(t)
	requireFail(t, res, "discovery", auth.ClassDiscovery)
}

func TestMASReRegistersWhenMASForgetsClient(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	res, _ := env.login(t)
	requireOK(t, res)
	env.emu.ForgetClients()
	res, _ = env.login(t)
	requireOK(t, res)
	if st := env.emu.Stats(); st.Registrations != 2 {
		t.Fatalf("registrations = %d, want 2 (re-registered after MAS forgot the client)", st.Registrations)
	}
}

// whoami calls whoami with a session and recovers once on M_UNKNOWN_TOKEN,
// the way the Matrix probes do.
func whoamiRecover(t *testing.T, env *masEnv, sess *auth.Session) (probes.Result, *auth.Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec := probes.NewRecorder("whoami", "login", env.acct.Tenant)
	err := rec.Step("whoami", func() error { return env.mgr.Whoami(ctx, env.acct, sess) })
	if err == nil {
		return rec.Finish(), sess
	}
	if probes.Classify(err) != probes.ClassAuthFailed {
		t.Fatalf("whoami: %v", err)
	}
	sub := probes.NewRecorder("whoami", "login", env.acct.Tenant)
	ns, err := env.mgr.Recover(ctx, env.acct, sess, sub)
	if err == nil {
		err = sub.Step("whoami", func() error { return env.mgr.Whoami(ctx, env.acct, ns) })
	}
	return sub.Finish(), ns
}

func TestMASRefresh(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	res, sess := env.login(t)
	requireOK(t, res)

	// Expired access token: M_UNKNOWN_TOKEN, refresh (rotation) and retry.
	env.emu.ExpireAccessTokens(env.acct.Config.User)
	res, ns := whoamiRecover(t, env, sess)
	requireOK(t, res)
	if !hasStep(res, "token_refresh") || hasStep(res, "authorize") || res.Counts[probes.CountTokenRefresh] != 1 {
		t.Fatalf("want a refresh without a new login: %v counts %v", stepNames(res), res.Counts)
	}
	if ns.RefreshToken == sess.RefreshToken || ns.AccessToken == sess.AccessToken {
		t.Fatal("the refresh did not rotate the tokens")
	}
	assertNoSecrets(t, res)

	// The old refresh token is refused once its successor has been used.
	old := *sess
	rec := probes.NewRecorder("x", "login", "acme")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := auth.NewMASMethod(env.cfg).Refresh(ctx, env.mgr, env.acct, &old, rec); err == nil ||
		probes.Classify(err) != auth.ClassTokenRefresh || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("reusing a rotated refresh token: %v", err)
	}

	// Expired and refresh revoked: the refresh fails (not failing the
	// run), a full login follows and succeeds.
	env.emu.ExpireAccessTokens(env.acct.Config.User)
	env.emu.RevokeRefreshTokens(env.acct.Config.User)
	res, ns2 := whoamiRecover(t, env, ns)
	requireOK(t, res)
	var refreshStep probes.Step
	for _, s := range res.Steps {
		if s.Name == "token_refresh" {
			refreshStep = s
		}
	}
	if refreshStep.OK || refreshStep.Class != auth.ClassTokenRefresh || !hasStep(res, "token_exchange") {
		t.Fatalf("want a failed token_refresh then a full login: %+v / %v", refreshStep, stepNames(res))
	}
	if ns2.AccessToken == ns.AccessToken {
		t.Fatal("no new session")
	}
	assertNoSecrets(t, res)
}

func TestMASCompatSSO(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	env.acct.Config.Method = config.MethodMASCompatSSO
	res, sess := env.login(t)
	requireOK(t, res)
	for _, want := range []string{"upstream_login", "sso_redirect", "provider_authorize", "account_create", "consent_submit", "token_login", "token_whoami"} {
		if !hasStep(res, want) {
			t.Errorf("no %s step: %v", want, stepNames(res))
		}
	}
	if !strings.HasPrefix(sess.UserID, "@openmeet-bot-acme_acme:") {
		t.Fatalf("session %v", sess)
	}
	assertNoSecrets(t, res)
	env.acct.Password = "wrong"
	res, _ = env.login(t)
	requireFail(t, res, "upstream_login", auth.ClassUpstreamLogin)
}

func TestMASCompatPassword(t *testing.T) {
	env := newMASEnv(t, masemu.Options{}, nil)
	env.acct.Config.Method = config.MethodMASCompatPassword
	env.emu.SetMASPassword(env.acct.Config.User, botPassword)
	res, _ := env.login(t)
	requireOK(t, res)
	env.acct.Password = "wrong"
	res, _ = env.login(t)
	requireFail(t, res, "compat_login", probes.ClassAuthFailed)

	off := newMASEnv(t, masemu.Options{PasswordsDisabled: true}, nil)
	off.acct.Config.Method = config.MethodMASCompatPassword
	res, _ = off.login(t)
	requireFail(t, res, "compat_login", probes.ClassBadResponse)
}
