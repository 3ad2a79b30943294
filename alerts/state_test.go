package alerts

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
)

// fakeClock is the injectable clock of the state machine tests.
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

// recorder is a Notifier that records what it was given.
type recorder struct {
	name string
	mu   sync.Mutex
	got  []Notification
	fail bool
}

func (r *recorder) Name() string { return r.name }
func (r *recorder) Notify(ctx context.Context, n Notification) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return "", context.DeadlineExceeded
	}
	r.got = append(r.got, n)
	return "ref-" + n.ID, nil
}
func (r *recorder) states() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, n := range r.got {
		s = append(s, string(n.State))
	}
	return strings.Join(s, ",")
}

func parseCfg(t testing.TB, yml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), "test.yml", func(string) string { return "" }, auth.LoginType().Kind, matrix.VersionsType().Kind, matrix.RoundtripType().Kind)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

const baseCfg = `
global: {homeserver_url: "http://127.0.0.1:1", server_name: localhost}
tenants:
  - {id: acme, bot: {user: bot-acme, password: x}}
  - {id: beta, bot: {user: bot-beta, password: x}}
probes:
  - {name: login, type: login, schedule: "@every 1m"}
`

// step is one event of a table case: a result (ok/fail) after an advance
// of the clock, or a tick.
type ev struct {
	adv  time.Duration
	res  string // "ok", "fail", "" = tick only
	want State  // state of (rule, acme) afterwards
}

// drive runs the events and delivers synchronously, returning the notifier.
func drive(t *testing.T, alerting string, evs []ev) (*Manager, *recorder, *fakeClock) {
	t.Helper()
	cfg := parseCfg(t, baseCfg+alerting)
	clk := &fakeClock{t: time.Date(2030, 1, 7, 12, 0, 0, 0, time.UTC)} // a Monday
	rec := &recorder{name: "rec"}
	m, err := New(Options{Config: cfg, Notifiers: []Notifier{rec}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		clk.Add(e.adv)
		switch e.res {
		case "ok":
			m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeSuccess})
		case "fail":
			m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure,
				Class: probes.ClassAuthFailed, FailedStep: "login", Error: "M_FORBIDDEN"})
		}
		m.Tick()
		m.deliverNow()
		if got := m.state("r", "acme"); got != e.want {
			t.Fatalf("event %d (%+v): state %q, want %q (notifications %s)", i, e, got, e.want, rec.states())
		}
	}
	return m, rec, clk
}

// deliverNow runs every worker's due work once, synchronously (tests).
func (m *Manager) deliverNow() {
	for _, w := range m.workers() {
		for _, j := range w.due() {
			w.deliver(context.Background(), j)
		}
	}
}

func (m *Manager) state(rule, tenant string) State {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[entryKey(rule, tenant)]; e != nil {
		return e.State
	}
	return StateInactive
}

func TestStateMachine(t *testing.T) {
	const (
		I = StateInactive
		P = StatePending
		F = StateFiring
		R = StateResolved
	)
	cases := []struct {
		name     string
		alerting string
		evs      []ev
		notes    string // notifications delivered, in order
	}{
		{
			name:     "fires after 3 failures, resolves after 2 successes",
			alerting: "alerting: {rules: [{name: r, probe: login, failures: 3, successes: 2}]}",
			evs: []ev{{time.Minute, "fail", I}, {time.Minute, "fail", I}, {time.Minute, "fail", F},
				{time.Minute, "fail", F}, {time.Minute, "ok", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name:     "a success breaks the failure streak",
			alerting: "alerting: {rules: [{name: r, probe: login, failures: 3}]}",
			evs:      []ev{{time.Minute, "fail", I}, {time.Minute, "fail", I}, {time.Minute, "ok", I}, {time.Minute, "fail", I}, {time.Minute, "fail", I}},
			notes:    "",
		},
		{
			name:     "flapping does not resolve until 2 successes in a row",
			alerting: "alerting: {rules: [{name: r, probe: login, failures: 2, successes: 2}]}",
			evs: []ev{{time.Minute, "fail", I}, {time.Minute, "fail", F},
				{time.Minute, "ok", F}, {time.Minute, "fail", F}, {time.Minute, "ok", F}, {time.Minute, "fail", F},
				{time.Minute, "ok", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name:     "for: keeps the alert pending, then fires on a tick",
			alerting: "alerting: {rules: [{name: r, probe: login, failures: 1, for: 5m}]}",
			evs: []ev{{time.Minute, "fail", P}, {2 * time.Minute, "", P}, {2 * time.Minute, "fail", P},
				{time.Minute, "", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name:     "pending that recovers before for: never notifies",
			alerting: "alerting: {rules: [{name: r, probe: login, failures: 1, for: 5m}]}",
			evs:      []ev{{time.Minute, "fail", P}, {time.Minute, "ok", I}, {10 * time.Minute, "", I}},
			notes:    "",
		},
		{
			name:     "fires again after resolving: a second instance",
			alerting: "alerting: {rules: [{name: r, probe: login, failures: 1}]}",
			evs:      []ev{{time.Minute, "fail", F}, {time.Minute, "ok", R}, {time.Minute, "fail", F}, {time.Minute, "ok", R}},
			notes:    "firing,resolved,firing,resolved",
		},
		{
			name: "a silence mutes firing but keeps the state",
			alerting: `alerting:
  rules: [{name: r, probe: login, failures: 1}]
  silences: [{matchers: {tenant: acme}, ends_at: "2030-01-07T12:10:00Z"}]`,
			evs:   []ev{{time.Minute, "fail", F}, {time.Minute, "fail", F}, {time.Minute, "ok", R}},
			notes: "",
		},
		{
			name: "firing when the silence ends notifies then",
			alerting: `alerting:
  rules: [{name: r, probe: login, failures: 1}]
  silences: [{matchers: {alertname: r}, ends_at: "2030-01-07T12:05:00Z"}]`,
			evs:   []ev{{time.Minute, "fail", F}, {3 * time.Minute, "fail", F}, {2 * time.Minute, "", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name: "a silence on another tenant does not mute",
			alerting: `alerting:
  rules: [{name: r, probe: login, failures: 1}]
  silences: [{matchers: {tenant: beta}, ends_at: "2030-01-07T13:00:00Z"}]`,
			evs:   []ev{{time.Minute, "fail", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name: "maintenance window (12:00 daily, 30m) mutes, then releases",
			alerting: `alerting:
  rules: [{name: r, probe: login, failures: 1}]
  maintenance_windows: [{name: nightly, schedule: "0 12 * * *", duration: 30m}]`,
			evs:   []ev{{time.Minute, "fail", F}, {10 * time.Minute, "fail", F}, {20 * time.Minute, "", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name: "resolve during a maintenance window after an announced firing is delivered",
			alerting: `alerting:
  rules: [{name: r, probe: login, failures: 1}]
  maintenance_windows: [{name: noon, schedule: "5 12 * * *", duration: 30m}]`,
			evs:   []ev{{time.Minute, "fail", F}, {5 * time.Minute, "fail", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name: "success ratio below 70% over 10m with 4 samples",
			alerting: `alerting:
  rules: [{name: r, probe: login, success_ratio: {below: 0.7, window: 10m, min_samples: 4}}]`,
			evs: []ev{{time.Minute, "ok", I}, {time.Minute, "fail", I}, {time.Minute, "ok", I}, {time.Minute, "ok", I},
				{time.Minute, "fail", F}, {time.Minute, "ok", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
		{
			name: "stale: no result for 3 intervals fires on a tick",
			alerting: `alerting:
  rules: [{name: r, probe: login, tenants: [acme], stale: {intervals: 3}}]`,
			evs:   []ev{{time.Minute, "ok", I}, {2 * time.Minute, "", I}, {2 * time.Minute, "", F}, {time.Minute, "ok", R}},
			notes: "firing,resolved",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, rec, _ := drive(t, tc.alerting, tc.evs)
			if got := rec.states(); got != tc.notes {
				t.Fatalf("notifications %q, want %q", got, tc.notes)
			}
		})
	}
}

func TestThresholdAndAnomaly(t *testing.T) {
	cfg := parseCfg(t, baseCfg+`
alerting:
  rules:
    - {name: slow, probe: login, threshold: {signal: "step:login", aggregate: p95, window: 10m, above: 2, min_samples: 3}}
    - {name: odd, probe: login, anomaly: {signal: duration, min_samples: 10, deviations: 4, min_delta: 0.5}}
    - {name: hs5xx, probe: login, threshold: {signal: "http_5xx_ratio:RoomSendEventRestServlet", above: 0.05}}
`)
	clk := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	m, err := New(Options{Config: cfg, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	obs := func(step, dur float64, sig map[string]float64) {
		clk.Add(time.Minute)
		m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeSuccess,
			Duration: time.Duration(dur * float64(time.Second)), Signals: sig,
			Steps: []probes.Step{{Name: "login", Duration: time.Duration(step * float64(time.Second)), OK: true}}})
	}
	// A new tenant's first slow runs must not page the anomaly rule.
	for i := 0; i < 9; i++ {
		obs(0.1, 5+float64(i%2), nil)
	}
	if s := m.state("odd", "acme"); s != StateInactive {
		t.Fatalf("anomaly fired before min_samples: %s", s)
	}
	for i := 0; i < 20; i++ {
		obs(0.1, 1+0.05*float64(i%3), nil)
	}
	if s := m.state("odd", "acme"); s != StateInactive {
		t.Fatalf("anomaly on normal values: %s", s)
	}
	obs(0.1, 9, nil)
	if s := m.state("odd", "acme"); s != StateFiring {
		t.Fatalf("anomaly not firing on a spike: %s", s)
	}
	// p95 of step:login over 10m.
	obs(3, 1, nil)
	obs(3, 1, nil)
	if s := m.state("slow", "acme"); s != StateFiring {
		t.Fatalf("p95 latency rule: %s", s)
	}
	obs(0.1, 1, map[string]float64{"http_5xx_ratio:RoomSendEventRestServlet": 0.2})
	if s := m.state("hs5xx", "acme"); s != StateFiring {
		t.Fatalf("signal rule: %s", s)
	}
	obs(0.1, 1, map[string]float64{"http_5xx_ratio:RoomSendEventRestServlet": 0.01})
	if s := m.state("hs5xx", "acme"); s != StateResolved {
		t.Fatalf("signal rule did not resolve: %s", s)
	}
	// A result without the signal changes nothing.
	obs(0.1, 1, nil)
	if s := m.state("hs5xx", "acme"); s != StateResolved {
		t.Fatalf("signal rule moved without data: %s", s)
	}
}

func TestBackoff(t *testing.T) {
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: 30 * time.Second} {
		for i := 0; i < 50; i++ {
			d := backoff(time.Second, 30*time.Second, attempt)
			if d < want/2 || d > want {
				t.Fatalf("attempt %d: %v not in [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
}

// TestRefreshInterval: a notification carries how often its alert is judged
// again, the longer of its probe's interval and the evaluation interval, so
// Alertmanager's endsAt can outlast a resharding hand-over.
func TestRefreshInterval(t *testing.T) {
	for _, c := range []struct {
		alerting string
		want     time.Duration
	}{
		{"alerting: {rules: [{name: r, probe: login, failures: 1}]}", time.Minute},
		{"alerting: {evaluation_interval: 3m, rules: [{name: r, probe: login, failures: 1}]}", 3 * time.Minute},
	} {
		_, rec, _ := drive(t, c.alerting, []ev{{res: "fail", want: StateFiring}})
		rec.mu.Lock()
		if len(rec.got) != 1 || rec.got[0].RefreshInterval != c.want {
			t.Errorf("%s: notifications %+v, want one with refresh interval %s", c.alerting, rec.got, c.want)
		}
		rec.mu.Unlock()
	}
}

// resender is a recorder that wants re-sends, as Alertmanager does.
type resender struct{ recorder }

func (r *resender) ResendInterval() time.Duration { return time.Hour }

// TestResendSavedPerRound: deliveries to a Resender are saved once after the
// round of due work (not after each, which made a replica with tens of
// thousands of tenants re-send too slowly); others at once.
func TestResendSavedPerRound(t *testing.T) {
	dir := t.TempDir()
	cfg := parseCfg(t, baseCfg+"alerting: {rules: [{name: r, probe: login, failures: 1}]}\n")
	cfg.Global.DataDir = dir
	for _, c := range []struct {
		n       Notifier
		unsaved bool
	}{{&resender{recorder{name: "am"}}, true}, {&recorder{name: "slack"}, false}} {
		m, err := New(Options{Config: cfg, Notifiers: []Notifier{c.n}})
		if err != nil {
			t.Fatal(err)
		}
		m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure})
		ws := m.workers()
		jobs := ws[0].due()
		if len(jobs) != 1 {
			t.Fatalf("%s: %d jobs due, want 1", c.n.Name(), len(jobs))
		}
		if got := ws[0].deliver(context.Background(), jobs[0]); got != c.unsaved {
			t.Errorf("%s: deliver left the record unsaved = %v, want %v", c.n.Name(), got, c.unsaved)
		}
	}
}

// TestHandedOverTenantDropped: an alert of a tenant this process no longer
// probes (a resharding gave it to another replica) is dropped when the new
// configuration is committed, so the state file does not keep re-sending
// it after its new owner resolved it; the global probe's alert and those
// of tenants still watched are kept.
func TestHandedOverTenantDropped(t *testing.T) {
	yml := baseCfg + "  - {name: versions, type: versions}\n" +
		"alerting: {rules: [{name: r, probe: login, failures: 1}, {name: g, probe: versions, failures: 1}]}\n"
	cfg := parseCfg(t, yml)
	keep := map[string]bool{"acme": true, "beta": true}
	m, err := New(Options{Config: cfg, TenantFilter: func(ids []string) []string {
		var out []string
		for _, id := range ids {
			if keep[id] {
				out = append(out, id)
			}
		}
		return out
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme", "beta"} {
		m.Observe(probes.Result{Probe: "login", Tenant: id, Outcome: probes.OutcomeFailure})
	}
	m.Observe(probes.Result{Probe: "versions", Outcome: probes.OutcomeFailure})
	delete(keep, "beta") // the next shard count gives beta to another replica
	if err := m.Apply(parseCfg(t, yml), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rule, tenant string
		want         State
	}{{"r", "acme", StateFiring}, {"r", "beta", StateInactive}, {"g", "", StateFiring}} {
		if got := m.state(c.rule, c.tenant); got != c.want {
			t.Errorf("%s/%s: %s, want %s", c.rule, c.tenant, got, c.want)
		}
	}
}

// TestRemovedTenantResolved: an alert of a tenant that left the
// configuration (not handed to another shard) is resolved at the reload,
// so notifiers without expiry (Slack, Matrix) hear the end of it; its entry
// stays while the resolve is undelivered and goes after.
func TestRemovedTenantResolved(t *testing.T) {
	yml := "alerting: {rules: [{name: r, probe: login, failures: 1}]}\n"
	rec := &recorder{name: "slack"}
	m, err := New(Options{Config: parseCfg(t, baseCfg+yml), Notifiers: []Notifier{rec}})
	if err != nil {
		t.Fatal(err)
	}
	deliver := func() {
		t.Helper()
		w := m.workers()[0]
		jobs := w.due()
		if len(jobs) != 1 {
			t.Fatalf("%d deliveries due, want 1", len(jobs))
		}
		w.deliver(context.Background(), jobs[0])
	}
	m.Observe(probes.Result{Probe: "login", Tenant: "beta", Outcome: probes.OutcomeFailure})
	deliver() // the firing notification
	without := strings.Replace(baseCfg, "  - {id: beta, bot: {user: bot-beta, password: x}}\n", "", 1)
	for range 2 { // resolved, and kept while the resolve is undelivered
		if err := m.Apply(parseCfg(t, without+yml), []Notifier{rec}); err != nil {
			t.Fatal(err)
		}
		if got := m.state("r", "beta"); got != StateResolved {
			t.Fatalf("beta after it left the configuration: %s, want resolved", got)
		}
	}
	deliver() // the resolve
	rec.mu.Lock()
	n := len(rec.got)
	last := rec.got[n-1]
	rec.mu.Unlock()
	if n != 2 || last.Tenant != "beta" || last.State != StateResolved {
		t.Fatalf("notifications: %d, last %+v; want firing then resolved", n, last)
	}
	if err := m.Apply(parseCfg(t, without+yml), []Notifier{rec}); err != nil {
		t.Fatal(err)
	}
	if got := m.state("r", "beta"); got != StateInactive {
		t.Fatalf("beta after its resolve was delivered: %s, want gone", got)
	}
}
