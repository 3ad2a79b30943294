package auth_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Issue 13, done-when 3: after 20 logins of one bot the platform holds at
// most one live session for it: the openmeet adapter logs out of the
// platform once the flow is done. The logins are 15 s apart on the
// emulator's clock, within the provider's token limit.
func TestOpenMeetLoginsLeaveNoPlatformSessions(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	env := newMASEnv(t, masemu.Options{Now: clk.Now}, nil)
	for i := 0; i < 20; i++ {
		res, _ := env.login(t)
		requireOK(t, res)
		if res.Counts[auth.CountUpstreamLogoutPrefix+"success"] != 1 || !hasStep(res, auth.StepUpstreamLogout) {
			t.Fatalf("login %d: no platform logout: counts %v steps %v", i, res.Counts, stepNames(res))
		}
		if n := env.emu.PlatformSessions(env.acct.Tenant, env.acct.Config.Email); n > 1 {
			t.Fatalf("after login %d: %d live platform sessions", i, n)
		}
		assertNoSecrets(t, res)
		clk.Add(15 * time.Second)
	}
	st := env.emu.Stats()
	if n := env.emu.PlatformSessions(env.acct.Tenant, env.acct.Config.Email); n != 0 || st.UpstreamLogins != 20 || st.PlatformLogouts != 20 {
		t.Fatalf("%d live platform sessions; stats %+v", n, st)
	}
	if st.ProviderTokenRateLimited != 0 {
		t.Errorf("provider answered 429: %+v", st)
	}
	// A failed flow logs out too: MAS down after the platform login.
	env.emu.StopMAS()
	env.mgr.Forget(env.acct.Key)
	res, _ := env.login(t)
	if res.OK() || res.Counts[auth.CountUpstreamLogoutPrefix+"success"] != 1 {
		t.Fatalf("failed flow: ok=%v counts %v steps %v", res.OK(), res.Counts, stepNames(res))
	}
	if n := env.emu.PlatformSessions(env.acct.Tenant, env.acct.Config.Email); n != 0 {
		t.Errorf("a failed flow left %d platform sessions", n)
	}
}

// Issue 13, done-when 2: 50 mas_oidc tenants, MAS configured as OpenMeet's,
// on the default login schedule
// (every 5 min, spread over the interval as the scheduler does) against the
// provider with its production token limit, on one injected clock shared by
// the emulator, the login budget and the login probe. Full logins are due
// every 10 min (more than the budget affords: 50 per 10 min against 4 per
// minute spread 15 s apart), so re-logins are deferred and sessions proven by
// refresh and whoami. The first logins of all tenants take a while (the
// budget spreads them); from then on, for 10 minutes, every tenant's session
// is proven in every 5-minute interval. Over the whole run: no 429 from the
// provider, no failed run, at most 4 full logins in any 60 s and none
// closer than 15 s.
func TestOpenMeetFiftyTenantsWithinProviderLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("50 tenants")
	}
	const tenants = 50
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	opts := masemu.OpenMeetOptions()
	opts.Now = clk.Now
	emu, err := masemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	var tb strings.Builder
	for i := 0; i < tenants; i++ {
		id := fmt.Sprintf("t%02d", i)
		emu.AddUpstreamUser(id, "bot-"+id+"@openmeet.net", "pw-"+id, "openmeet-bot-"+id)
		fmt.Fprintf(&tb, "  - id: %s\n    bot: {method: mas_oidc, email: bot-%s@openmeet.net, password: pw-%s}\n", id, id, id)
	}
	yml := fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
mas:
  public_url: %s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %s}
tenants:
%sprobes:
  - name: login
    type: login
    login: {full_login_interval: 10m}
`, emu.HomeserverURL, emu.ServerName, emu.MASURL, emu.UpstreamURL, tb.String())
	cfg, err := config.Parse([]byte(yml), "openmeet-50.yml", func(string) string { return "" }, kinds()...)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	p, _ := cfg.Probe("login")
	interval := 5 * time.Minute
	if got := p.Schedule.Spec; got != "@every 5m" {
		t.Fatalf("default schedule of a mas_oidc login probe: %q", got)
	}
	if b := cfg.MAS.LoginBudget; b.Logins != 4 || b.Window.D() != time.Minute {
		t.Fatalf("default MAS login budget %+v", b)
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	mgr.Now = clk.Now
	auth.RegisterMAS(mgr, cfg.MAS)
	b := cfg.MAS.LoginBudget
	mgr.SetBudget(&auth.Budget{Name: "mas.login_budget", Max: b.Logins, Window: b.Window.D(), MinGap: b.MinGap(), Now: clk.Now, After: clk.After},
		config.MethodMASOIDC, config.MethodMASCompatSSO)
	probe := &auth.LoginProbe{Name: "login", Manager: mgr, Tenants: cfg.TenantMap(nil), FullLoginInterval: loginInterval(t, p)}

	type run struct {
		at  time.Duration
		res probes.Result
	}
	start := clk.Now()
	runs := map[string][]run{}
	var fullLogins []time.Duration
	firstSession := map[string]time.Duration{}
	const horizon = 40 * time.Minute
	// The scheduler spreads a probe's tenants over its interval.
	for k := time.Duration(0); k*interval < horizon; k++ {
		for i, tn := range cfg.Tenants {
			clk.AdvanceTo(start.Add(k*interval + time.Duration(i)*interval/tenants))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res := probe.Run(ctx, tn.ID)
			cancel()
			at := clk.Now().Sub(start) // after any wait for the budget
			runs[tn.ID] = append(runs[tn.ID], run{at, res})
			if n := res.Counts["login:mas_oidc:success"] + res.Counts["login:mas_oidc:failure"]; n > 0 {
				fullLogins = append(fullLogins, at)
			}
			switch {
			case res.OK():
				if _, ok := firstSession[tn.ID]; !ok {
					firstSession[tn.ID] = at
				}
			case res.Outcome == probes.OutcomeSkipped && res.Class == probes.ClassLoginBudget:
			default:
				t.Fatalf("%s at %s failed at %s (%s): %s\nsteps %v", tn.ID, at, res.FailedStep, res.Class, res.Error, stepNames(res))
			}
		}
	}
	st := emu.Stats()
	if st.ProviderTokenRateLimited != 0 {
		t.Fatalf("the provider answered 429 %d times: %+v", st.ProviderTokenRateLimited, st)
	}
	// Full logins within the budget: ≤ 4 in any 60 s, ≥ 15 s apart.
	sort.Slice(fullLogins, func(i, j int) bool { return fullLogins[i] < fullLogins[j] })
	for i := range fullLogins {
		if i > 0 && fullLogins[i]-fullLogins[i-1] < 15*time.Second {
			t.Errorf("full logins at %s and %s: closer than 15 s", fullLogins[i-1], fullLogins[i])
		}
		n := 0
		for _, x := range fullLogins[i:] {
			if x-fullLogins[i] < time.Minute {
				n++
			}
		}
		if n > 4 {
			t.Errorf("%d full logins in the minute from %s", n, fullLogins[i])
		}
	}
	if st.ProviderTokenRequests != len(fullLogins) {
		t.Errorf("%d code exchanges at the provider, %d full logins", st.ProviderTokenRequests, len(fullLogins))
	}
	// Every tenant got a session; from the last first session on, 10
	// minutes in which every tenant is proven in every 5-minute interval.
	var warm time.Duration
	for i := range cfg.Tenants {
		at, ok := firstSession[cfg.Tenants[i].ID]
		if !ok {
			t.Fatalf("%s never logged in", cfg.Tenants[i].ID)
		}
		warm = max(warm, at)
	}
	if warm+10*time.Minute+interval > horizon {
		t.Fatalf("first logins took %s: no 10 minutes left to measure", warm)
	}
	refreshed := 0
	for id, rs := range runs {
		for from := warm; from < warm+10*time.Minute; from += interval {
			proven := false
			for _, r := range rs {
				if r.at >= from && r.at < from+interval && r.res.OK() {
					proven = true
					if r.res.Counts[probes.CountTokenRefresh] > 0 && hasStep(r.res, "whoami") {
						refreshed++
					}
				}
			}
			if !proven {
				t.Errorf("%s: no session proven in [%s, %s)", id, from, from+interval)
			}
		}
	}
	if refreshed == 0 {
		t.Error("no session was proven by refresh and whoami")
	}
	t.Logf("first logins of %d tenants took %s; %d full logins in %s; %d proofs by refresh in the measured 10 min; provider: %d code exchanges, 0 refused",
		tenants, warm, len(fullLogins), horizon, refreshed, st.ProviderTokenRequests)
}

// MAS as OpenMeet configures it sends prompt=none upstream: without a
// platform session the provider answers login_required, and the login fails
// as upstream_login (no email form is ever shown).
func TestOpenMeetNoPlatformSession(t *testing.T) {
	env := newMASEnv(t, masemu.OpenMeetOptions(), nil)
	env.emu.SetFaults(masemu.Faults{UpstreamSessionExpired: true})
	res, _ := env.login(t)
	if res.OK() || res.Class != auth.ClassUpstreamLogin {
		t.Fatalf("ok=%v at %s (%s): %s; steps %v", res.OK(), res.FailedStep, res.Class, res.Error, stepNames(res))
	}
	if n := env.emu.PlatformSessions(env.acct.Tenant, env.acct.Config.Email); n != 0 {
		t.Errorf("%d live platform sessions", n)
	}
	env.emu.SetFaults(masemu.Faults{})
	res, _ = env.login(t)
	requireOK(t, res)
	if sess := env.mgr.Cached(env.acct.Key); sess == nil || !strings.HasPrefix(sess.UserID, "@openmeet-bot-acme_acme:") {
		t.Fatalf("session %v", sess)
	}
}

// countingMethod logs in without a network and counts its logins; its
// sessions carry a refresh token it cannot use (no Refresher).
type countingMethod struct {
	hs     string
	logins int
}

func (c *countingMethod) Login(_ context.Context, _ *auth.Manager, _ auth.Account, rec *probes.Recorder) (*auth.Session, error) {
	c.logins++
	rec.AddStep("login", 0, nil)
	return &auth.Session{AccessToken: "t", RefreshToken: "r", HomeserverURL: c.hs}, nil
}

// Between full logins the login probe refreshes only with a method that can:
// a mas_compat_sso session is proven by whoami alone, never by a full login.
func TestLoginProbeRefreshesOnlyWithARefresher(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"user_id":"@bot:example.net","device_id":"D"}`))
	}))
	defer srv.Close()
	m := auth.NewManager(srv.Client())
	meth := &countingMethod{hs: srv.URL}
	m.Register(config.MethodMASCompatSSO, meth)
	cfg := &config.Config{Tenants: []config.Tenant{{ID: "a", HomeserverURL: srv.URL, ServerName: "example.net",
		Bot: config.Account{Method: config.MethodMASCompatSSO, User: "bot", Password: "x"}}}}
	p := &auth.LoginProbe{Name: "login", Manager: m, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res := p.Run(ctx, "a")
		cancel()
		requireOK(t, res)
	}
	if meth.logins != 1 {
		t.Fatalf("%d full logins in 3 runs, want 1", meth.logins)
	}
}

// refusingMethod refuses the logins of tenant "bad" (a wrong password).
// refusingMethod refuses tenant "bad": as the homeserver refusing its
// password does (auth_failed at login), or as set by class and step.
type refusingMethod struct {
	countingMethod
	class probes.Class
	step  string
}

func (r *refusingMethod) Login(ctx context.Context, m *auth.Manager, a auth.Account, rec *probes.Recorder) (*auth.Session, error) {
	if a.Tenant == "bad" {
		class, step := r.class, r.step
		if class == "" {
			class, step = probes.ClassAuthFailed, "login"
		}
		err := probes.Errorf(class, "refused")
		rec.AddStep(step, 0, err)
		return nil, err
	}
	return r.countingMethod.Login(ctx, m, a, rec)
}

// An account whose login was refused does not hold back the re-logins of
// working sessions (it waits for its own share of the budget), while an
// account waiting for a first login does.
func TestRefusedAccountDoesNotHoldBackRelogins(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"user_id":"@bot:example.net","device_id":"D"}`))
	}))
	defer srv.Close()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	m := auth.NewManager(srv.Client())
	m.Now = clk.Now
	meth := &refusingMethod{countingMethod: countingMethod{hs: srv.URL}}
	m.Register(config.MethodPassword, meth)
	m.SetBudget(&auth.Budget{Name: "test", Max: 2, Window: time.Hour, Now: clk.Now}, config.MethodPassword)
	var cfg config.Config
	for _, id := range []string{"good", "bad", "new"} {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, HomeserverURL: srv.URL, ServerName: "example.net",
			Bot: config.Account{Method: config.MethodPassword, User: "bot", Password: "x"}})
	}
	p := &auth.LoginProbe{Name: "login", Manager: m, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	run := func(id string) probes.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return p.Run(ctx, id)
	}
	requireOK(t, run("good"))
	if r := run("bad"); r.Class != probes.ClassAuthFailed {
		t.Fatalf("bad: %s", r.Class)
	}
	clk.Add(50 * time.Minute)
	if r := run("bad"); r.Outcome != probes.OutcomeSkipped {
		t.Fatalf("bad again within the window: %s %s", r.Outcome, r.Class)
	}
	clk.Add(11 * time.Minute) // good's full login is due, the budget has room again
	r := run("good")
	requireOK(t, r)
	if meth.logins != 2 {
		t.Fatalf("good: %d logins, want its re-login (the refused account holds nothing back); steps %v", meth.logins, stepNames(r))
	}
	// bad's share has passed: it tries again and is refused; the budget is
	// spent (good and bad at 61 min) when "new" comes for a first login at
	// 116 min: skipped, waiting.
	if r := run("bad"); r.Class != probes.ClassAuthFailed {
		t.Fatalf("bad after its share: %s", r.Class)
	}
	clk.Add(55 * time.Minute)
	if r := run("new"); r.Outcome != probes.OutcomeSkipped {
		t.Fatalf("new with the budget spent: %s %s", r.Outcome, r.Class)
	}
	// At 121 min good's re-login is due and the budget has room, but new
	// waits for a first login: good gives way and proves its session.
	clk.Add(5 * time.Minute)
	r = run("good")
	requireOK(t, r)
	if meth.logins != 2 || !strings.Contains(fmt.Sprint(r.Steps), "gives way") {
		t.Fatalf("good did not give way: %d logins, steps %+v", meth.logins, r.Steps)
	}
	requireOK(t, run("new"))
	requireOK(t, run("good"))
	if meth.logins != 4 {
		t.Fatalf("%d logins, want new's first and then good's re-login", meth.logins)
	}
}

// An account the upstream provider refused waits its share of the budget
// and then gives way to an account waiting for its first login: one broken
// tenant retrying as often as the budget allows cannot starve a new one.
func TestUpstreamRefusedAccountGivesWayToFirstLogins(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"user_id":"@bot:example.net","device_id":"D"}`))
	}))
	defer srv.Close()
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	m := auth.NewManager(srv.Client())
	m.Now = clk.Now
	meth := &refusingMethod{countingMethod: countingMethod{hs: srv.URL}, class: auth.ClassUpstreamLogin, step: "upstream_login"}
	m.Register(config.MethodPassword, meth)
	m.SetBudget(&auth.Budget{Name: "test", Max: 4, Window: time.Minute, MinGap: 15 * time.Second, Now: clk.Now}, config.MethodPassword)
	var cfg config.Config
	for _, id := range []string{"bad", "new"} {
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, HomeserverURL: srv.URL, ServerName: "example.net",
			Bot: config.Account{Method: config.MethodPassword, User: "bot", Password: "x"}})
	}
	p := &auth.LoginProbe{Name: "login", Manager: m, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	run := func(id string) probes.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return p.Run(ctx, id)
	}
	if r := run("bad"); r.Class != auth.ClassUpstreamLogin {
		t.Fatalf("bad: %s %s", r.Outcome, r.Class)
	}
	clk.Add(2 * time.Second)
	if r := run("new"); r.Outcome != probes.OutcomeSkipped {
		t.Fatalf("new within the gap: %s %s", r.Outcome, r.Class)
	}
	clk.Add(14 * time.Second) // bad's share (15 s) and the gap have passed
	if r := run("bad"); r.Outcome != probes.OutcomeSkipped || !strings.Contains(r.Error, "gives way") {
		t.Fatalf("bad should give way to new: %s %s %q", r.Outcome, r.Class, r.Error)
	}
	requireOK(t, run("new"))
	clk.Add(16 * time.Second)
	if r := run("bad"); r.Class != auth.ClassUpstreamLogin {
		t.Fatalf("bad once nobody waits: %s %s", r.Outcome, r.Class)
	}
	if meth.logins != 1 {
		t.Fatalf("logins of new: %d", meth.logins)
	}
}

// Issue 22, done-when 4: 12 mas_oidc tenants against the emulated OpenMeet
// provider, default schedules (login every 5 min, first round spread over
// the scheduler's warm-up), the default MAS budget (4 per 60 s, 15 s
// apart), on one clock shared by the emulator and the budget. A run that
// needs a login waits for the budget's slot within its 30 s: at least 6
// logins succeed in the first 150 s, none is refused by the provider, and
// the budget is never exceeded. Runs are driven one after another at
// their planned times (a run that waited ends after the next was planned,
// which then starts at once).
func TestOpenMeetTwelveTenantsFirstLogins(t *testing.T) {
	const tenants = 12
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	opts := masemu.OpenMeetOptions()
	opts.Now = clk.Now
	emu, err := masemu.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	var tb strings.Builder
	for i := 0; i < tenants; i++ {
		id := fmt.Sprintf("t%02d", i)
		emu.AddUpstreamUser(id, "bot-"+id+"@openmeet.net", "pw-"+id, "openmeet-bot-"+id)
		fmt.Fprintf(&tb, "  - id: %s\n    bot: {method: mas_oidc, email: bot-%s@openmeet.net, password: pw-%s}\n", id, id, id)
	}
	yml := fmt.Sprintf(`global: {homeserver_url: %s, server_name: %s}
mas:
  public_url: %s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %s}
tenants:
%sprobes:
  - {name: login, type: login}
`, emu.HomeserverURL, emu.ServerName, emu.MASURL, emu.UpstreamURL, tb.String())
	cfg, err := config.Parse([]byte(yml), "openmeet-12.yml", func(string) string { return "" }, kinds()...)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	p, _ := cfg.Probe("login")
	if p.Schedule.Spec != "@every 5m" || p.Timeout.D() != 30*time.Second {
		t.Fatalf("default login schedule %q timeout %s", p.Schedule.Spec, p.Timeout.D())
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	mgr.Now = clk.Now
	auth.RegisterMAS(mgr, cfg.MAS)
	b := cfg.MAS.LoginBudget
	mgr.SetBudget(&auth.Budget{Name: "mas.login_budget", Max: b.Logins, Window: b.Window.D(), MinGap: b.MinGap(), Now: clk.Now, After: clk.After},
		config.MethodMASOIDC, config.MethodMASCompatSSO)
	probe := &auth.LoginProbe{Name: "login", Manager: mgr, Tenants: cfg.TenantMap(nil), FullLoginInterval: loginInterval(t, p)}

	// The scheduler's first round after a start: the warm-up spread.
	type planned struct {
		tenant string
		at     time.Duration
	}
	warm := probes.WarmupWindow(5*time.Minute, cfg.Global.JitterFraction())
	var plan []planned
	for _, tn := range cfg.Tenants {
		plan = append(plan, planned{tn.ID, probes.Offset("login", tn.ID, warm, 1)})
	}
	sort.Slice(plan, func(i, j int) bool { return plan[i].at < plan[j].at })
	start := clk.Now()
	var logins []time.Duration
	for _, pl := range plan {
		clk.AdvanceTo(start.Add(pl.at))
		ctx, cancel := context.WithTimeout(context.Background(), p.Timeout.D())
		res := probe.Run(ctx, pl.tenant)
		cancel()
		end := clk.Now().Sub(start)
		switch {
		case res.OK() && res.Counts["login:mas_oidc:success"] == 1:
			logins = append(logins, end)
		case res.Outcome == probes.OutcomeSkipped && res.Class == probes.ClassLoginBudget:
		default:
			t.Fatalf("%s at %s: %s %s at %s: %s", pl.tenant, pl.at, res.Outcome, res.Class, res.FailedStep, res.Error)
		}
	}
	in150 := 0
	for i, at := range logins {
		if at <= 150*time.Second {
			in150++
		}
		if i > 0 && at-logins[i-1] < 15*time.Second {
			t.Errorf("logins at %s and %s: closer than 15 s", logins[i-1], at)
		}
		if i >= 4 && at-logins[i-4] < time.Minute {
			t.Errorf("5 logins within a minute, from %s to %s", logins[i-4], at)
		}
	}
	if in150 < 6 {
		t.Errorf("%d successful logins in the first 150 s (at %v), want at least 6", in150, logins)
	}
	if st := emu.Stats(); st.ProviderTokenRateLimited != 0 {
		t.Errorf("the provider answered 429: %+v", st)
	}
	t.Logf("first round spread over %s: %d logins in the first 150 s, at %v", warm, in150, logins)
}
