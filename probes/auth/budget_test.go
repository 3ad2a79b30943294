package auth_test

import (
	"context"
	"sync"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// After is a Budget's timer on this clock: the wait passes at once (the
// clock moves on by d), so runs driven one after another see the time a
// concurrent run would have waited.
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

// AdvanceTo moves the clock to t unless it is already later (a run that
// waited for the budget ends after the next one was planned).
func (c *fakeClock) AdvanceTo(t time.Time) {
	c.mu.Lock()
	if t.After(c.t) {
		c.t = t
	}
	c.mu.Unlock()
}

func TestBudgetSlidingWindow(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	b := &auth.Budget{Name: "rc_login.address", Max: 5, Window: 1665 * time.Second, Now: c.Now}
	for i := 0; i < 5; i++ {
		if ok, _ := b.Take(); !ok {
			t.Fatalf("login %d refused", i+1)
		}
		c.Add(time.Second)
	}
	ok, wait := b.Take()
	if ok || wait != 1660*time.Second {
		t.Fatalf("6th login: ok %v wait %s, want refused for 1660s", ok, wait)
	}
	c.Add(1660 * time.Second)
	if ok, _ := b.Take(); !ok {
		t.Fatal("login refused after the window moved on")
	}
	if ok, _ := b.Take(); ok {
		t.Fatal("second login in the same second allowed")
	}
}

// The login probe behind Synapse's limits: one full login, then whoami
// only; a second process logs in on a device of its own without cancelling
// the first one's token; a short-lived process logs its device out; over
// the budget a run without a session is skipped with a reason.
//
// Against Synapse itself with its default limits (rc_login: 5 per address,
// then one per 333 s), which must answer no 429.
func TestLoginProbeWithinRcLogin(t *testing.T) {
	d := testenv.NewSynapse(t, testenv.SynapseOptions{})
	user, pw := d.User(t, "login")
	cfg := &config.Config{Tenants: []config.Tenant{{ID: "acme", HomeserverURL: d.URL, ServerName: d.ServerName,
		Bot: config.Account{Method: config.MethodPassword, User: user, Password: promcfg.Secret(pw)}}}}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	budget := &auth.Budget{Name: "rc_login.address", Max: 5, Window: 1665 * time.Second}
	newMgr := func(instance string) *auth.Manager {
		m := auth.NewManager(httpc)
		m.Instance = instance
		m.SetBudget(budget, config.MethodPassword)
		return m
	}
	daemon := newMgr("d-1")
	probe := &auth.LoginProbe{Name: "login", Manager: daemon, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	logins := 0
	for i := 0; i < 10; i++ {
		r := probe.Run(ctx, "acme")
		if r.Outcome != probes.OutcomeSuccess {
			t.Fatalf("run %d: %s %s at %s: %s", i, r.Outcome, r.Class, r.FailedStep, r.Error)
		}
		logins += r.Counts["login:password:success"]
	}
	if logins != 1 {
		t.Fatalf("%d full logins in 10 runs, want 1", logins)
	}
	first := daemon.Cached("acme/bot")

	// A CLI run next to it: its own device, the daemon's token survives.
	cli := newMgr("cli-1")
	cp := &auth.LoginProbe{Name: "login", Manager: cli, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	if r := cp.Run(ctx, "acme"); r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("CLI run: %s %s: %s", r.Outcome, r.Class, r.Error)
	}
	second := cli.Cached("acme/bot")
	if first.DeviceID == second.DeviceID {
		t.Fatalf("two processes share device %s", first.DeviceID)
	}
	acct, _ := auth.NewAccount(&cfg.Tenants[0], "bot", cfg.Tenants[0].Bot)
	if err := daemon.Whoami(ctx, acct, first); err != nil {
		t.Fatalf("the daemon's token after the CLI login: %v", err)
	}
	if n, err := cli.LogoutAll(ctx); n != 1 || err != nil {
		t.Fatalf("CLI logout: %d, %v", n, err)
	}
	if err := cli.Whoami(ctx, acct, second); probes.StatusOf(err) != 401 {
		t.Fatalf("the CLI's token after its logout: %v, want 401", err)
	}
	if err := daemon.Whoami(ctx, acct, first); err != nil {
		t.Fatalf("the daemon's token after the CLI logout: %v", err)
	}
	// Spend the rest of the budget; the next process without a session is skipped.
	for i := 0; i < 3; i++ {
		if _, err := newMgr("x").Login(ctx, acct, probes.NewRecorder("", "", "")); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	r := (&auth.LoginProbe{Name: "login", Manager: newMgr("y"), Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}).Run(ctx, "acme")
	if r.Outcome != probes.OutcomeSkipped || r.Class != probes.ClassLoginBudget || r.Error == "" {
		t.Fatalf("over budget: %s %s %q, want skipped login_budget with a reason", r.Outcome, r.Class, r.Error)
	}
	if n, err := d.Count(ctx, "synapse_http_server_responses_total", `code="429"`); err != nil || n != 0 {
		t.Fatalf("Synapse answered %g 429s (%v)", n, err)
	}
	if n, err := d.Count(ctx, "synapse_http_server_response_time_seconds_count", `servlet="LoginRestServlet"`, `code="200"`); err != nil || n != 5 {
		t.Fatalf("Synapse served %g logins, want the budget's 5 (%v)", n, err)
	}
}

// A tenant whose password is wrong may retry only once per its share of
// the budget, so it cannot spend the other tenants' logins.
func TestRefusedLoginWaitsItsShare(t *testing.T) {
	d := &testenv.SharedDendrite(t).Homeserver
	lim := testenv.Limited(t, d, synlimit.Options{Pause: -1})
	good, goodPW := d.User(t, "good")
	bad, _ := d.User(t, "bad")
	cfg := &config.Config{Tenants: []config.Tenant{
		{ID: "good", HomeserverURL: lim.URL, ServerName: d.ServerName, Bot: config.Account{Method: config.MethodPassword, User: good, Password: promcfg.Secret(goodPW)}},
		{ID: "bad", HomeserverURL: lim.URL, ServerName: d.ServerName, Bot: config.Account{Method: config.MethodPassword, User: bad, Password: "wrong"}},
	}}
	c := &fakeClock{t: time.Now()}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	m := auth.NewManager(httpc)
	m.SetBudget(&auth.Budget{Name: "rc_login.address", Max: 5, Window: 1665 * time.Second, Now: c.Now}, config.MethodPassword)
	p := &auth.LoginProbe{Name: "login", Manager: m, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	outcomes := []probes.Class{}
	for i := 0; i < 4; i++ {
		outcomes = append(outcomes, p.Run(ctx, "bad").Class)
		c.Add(20 * time.Second)
	}
	want := []probes.Class{probes.ClassAuthFailed, probes.ClassLoginBudget, probes.ClassLoginBudget, probes.ClassLoginBudget}
	for i := range want {
		if outcomes[i] != want[i] {
			t.Fatalf("bad tenant every 20 s: %v, want %v", outcomes, want)
		}
	}
	if r := p.Run(ctx, "good"); r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("good tenant: %s %s: %s", r.Outcome, r.Class, r.Error)
	}
	c.Add(333 * time.Second)
	if r := p.Run(ctx, "bad"); r.Class != probes.ClassAuthFailed {
		t.Fatalf("bad tenant after its share: %s %s", r.Outcome, r.Class)
	}
	testenv.NoRefusals(t, lim)
}

// The daemon's instance id (part of every device id) survives a restart
// with the same data_dir; another data_dir is another instance.
func TestInstanceStableAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	a, err := auth.InstanceFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := auth.InstanceFromDir(dir)
	c, _ := auth.InstanceFromDir(t.TempDir())
	if a == "" || a != b || a == c {
		t.Fatalf("instance ids %q %q %q: want the first two equal, the third different", a, b, c)
	}
	acct := auth.Account{Key: "acme/bot", Instance: a}
	other := acct
	other.Instance = c
	if acct.DeviceID() == other.DeviceID() || acct.DeviceID() != (auth.Account{Key: "acme/bot", Instance: b}).DeviceID() {
		t.Fatal("device ids do not follow the instance")
	}
}

// The MAS budget spreads logins: 4 per 60 s, at least 15 s apart.
func TestBudgetMinGap(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	b := &auth.Budget{Name: "mas", Max: 4, Window: time.Minute, MinGap: 15 * time.Second, Now: c.Now}
	if ok, _ := b.Take(); !ok {
		t.Fatal("first login refused")
	}
	c.Add(10 * time.Second)
	if ok, wait := b.Take(); ok || wait != 5*time.Second || b.Available() {
		t.Fatalf("10 s after a login: ok=%v wait=%s", ok, wait)
	}
	for i := 1; i < 4; i++ {
		c.Add(5 * time.Second)
		if ok, _ := b.Take(); !ok {
			t.Fatalf("login %d at 15 s spacing refused", i)
		}
		c.Add(10 * time.Second)
	}
	// 4 taken at 0, 15, 30, 45 s; now 55 s: window full until 60 s.
	if ok, wait := b.Take(); ok || wait != 5*time.Second {
		t.Fatalf("5th within the window: ok=%v wait=%s", ok, wait)
	}
	c.Add(5 * time.Second)
	if ok, _ := b.Take(); !ok {
		t.Fatal("60 s after the first: refused")
	}
}

// Accounts waiting for a first login hold back re-logins of others, until
// they log in or are not heard of for 15 min.
func TestBudgetWaiting(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	b := &auth.Budget{Name: "mas", Max: 4, Window: time.Minute, Now: c.Now}
	if b.OthersWaiting("a") {
		t.Fatal("nobody waits yet")
	}
	b.SetWaiting("new", true)
	if !b.OthersWaiting("a") || b.OthersWaiting("new") {
		t.Fatal("waiting not seen, or seen by itself")
	}
	b.SetWaiting("new", false)
	if b.OthersWaiting("a") {
		t.Fatal("still waiting after its login")
	}
	b.SetWaiting("gone", true)
	c.Add(15 * time.Minute)
	if b.OthersWaiting("a") {
		t.Fatal("a waiting account not heard of for 15 min still holds re-logins back")
	}
	var nb *auth.Budget
	nb.SetWaiting("x", true)
	if nb.OthersWaiting("y") {
		t.Fatal("nil budget")
	}
}
