package config_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// The probe types of these tests are the real ones: the configuration
// adds up what their packages declare (costs, derived schedules, the
// login's defaults).
func kinds() []config.Kind {
	return []config.Kind{matrix.VersionsType().Kind, auth.LoginType().Kind, matrix.RoundtripType().Kind}
}

func parse(t *testing.T, y string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(y), "c.yml", func(string) string { return "" }, kinds()...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func tenantsYAML(n int, ownPeers bool) string {
	var b strings.Builder
	b.WriteString("global: {homeserver_url: \"https://hs.example\", server_name: example.org}\ntenants:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {id: t%d, bot: {user: bot%d, password: x}", i, i)
		if ownPeers {
			fmt.Fprintf(&b, ", peer: {user: peer%d, password: y}", i)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

const sharedPeerRoundtrip = "probes:\n  - {name: roundtrip, type: roundtrip, roundtrip: {peer: {user: shared, password: z}}}\n"

// TestProbeHasCommonFieldsOnly: a probe's settings belong to its type's
// package; config.Probe holds the fields every probe has.
func TestProbeHasCommonFieldsOnly(t *testing.T) {
	common := []string{"Name", "Type", "Schedule", "Timeout", "Tenants", "Disabled"}
	typ := reflect.TypeFor[config.Probe]()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		if f.IsExported() && !slices.Contains(common, f.Name) {
			t.Errorf("config.Probe.%s: a per-type field (settings belong to the type's package)", f.Name)
		}
	}
	for _, name := range common {
		if _, ok := typ.FieldByName(name); !ok {
			t.Errorf("config.Probe lacks the common field %s", name)
		}
	}
}

// A configuration without probes gets the Default types: versions and
// login.
func TestDefaultProbes(t *testing.T) {
	cfg := parse(t, tenantsYAML(1, false))
	var names []string
	for _, p := range cfg.Probes {
		names = append(names, p.Name+"/"+p.Type+"/"+p.Schedule.Spec)
	}
	if got := strings.Join(names, ","); got != "login/login/@every 1m,versions/versions/@every 30s" {
		t.Errorf("default probes: %s", got)
	}
}

// The round trip's default schedule follows the busiest peer's load
// against rc_invites.per_user (1 per 333 s, planned within 80 %).
func TestDerivedRoundtripSchedule(t *testing.T) {
	for _, tc := range []struct {
		tenants  int
		ownPeers bool
		extra    string
		want     time.Duration
	}{
		{1, true, "", 10 * time.Minute},
		{20, true, "", 10 * time.Minute},
		{2, false, "", 14 * time.Minute},
		{20, false, "", 139 * time.Minute},
		{20, false, "synapse_limits: {rc_invites: {per_user: {per_second: 1, burst_count: 10}}}\n", 10 * time.Minute},
		{20, false, "synapse_limits: {disabled: true}\n", 10 * time.Minute},
	} {
		cfg := parse(t, tenantsYAML(tc.tenants, tc.ownPeers)+tc.extra+sharedPeerRoundtrip)
		p, _ := cfg.Probe("roundtrip")
		if got := p.Schedule.Interval(time.Now()); got != tc.want {
			t.Errorf("%d tenants, own peers %v, %q: every %s, want %s", tc.tenants, tc.ownPeers, tc.extra, got, tc.want)
		}
		if f := config.CheckBudget(cfg); len(f) > 0 {
			t.Errorf("the derived default exceeds a limit: %v", f)
		}
	}
}

// Exempt accounts (an admin override) are left out of the check; the
// inviter's exemption covers rc_invites.per_user.
func TestCheckBudgetExempt(t *testing.T) {
	y := tenantsYAML(20, false) + `probes:
  - {name: roundtrip, type: roundtrip, schedule: "@every 1m", roundtrip: {peer: {user: shared, password: z}}}
synapse_limits:
  exempt: [shared`
	for i := 0; i < 20; i++ {
		y += fmt.Sprintf(", \"@bot%d:example.org\"", i)
	}
	cfg := parse(t, y+"]\n")
	if f := config.CheckBudget(cfg); len(f) > 0 {
		t.Fatalf("exempt accounts still reported: %v", f)
	}
	// The peer alone exempt: the invites it receives still count, and the
	// fix names the inviting bots, whose override Synapse checks.
	cfg = parse(t, tenantsYAML(20, false)+`probes:
  - {name: roundtrip, type: roundtrip, schedule: "@every 1m", roundtrip: {peer: {user: shared, password: z}}}
synapse_limits: {exempt: [shared]}
`)
	var limiters []string
	for _, f := range config.CheckBudget(cfg) {
		limiters = append(limiters, f.Limiter)
		if f.Limiter == "rc_invites.per_user" && (f.Account != "@shared:example.org" ||
			!strings.Contains(f.Fix, "the 20 accounts @bot0:example.org … @bot9:example.org") || !strings.Contains(f.Fix, "tenants[].peer")) {
			t.Errorf("rc_invites.per_user: %s", f)
		}
	}
	if !slices.Contains(limiters, "rc_invites.per_user") || slices.Contains(limiters, "rc_joins.local") {
		t.Errorf("limiters reported with the peer exempt: %v", limiters)
	}
}

// The first round of a round trip after a start must be spread so that a
// shared peer's bursts hold: 20 tenants sharing one peer need (20 - 5) /
// 0.003 s for rc_invites.per_user; tenants with their own peers need none.
func TestFirstRoundSpread(t *testing.T) {
	for _, tc := range []struct {
		tenants  int
		ownPeers bool
		extra    string
		want     time.Duration
	}{
		{20, true, "", 0},
		{5, false, "", 0},
		{6, false, "", 334 * time.Second},
		{20, false, "", 5000 * time.Second},
		{20, false, "synapse_limits: {disabled: true}\n", 0},
	} {
		cfg := parse(t, tenantsYAML(tc.tenants, tc.ownPeers)+tc.extra+sharedPeerRoundtrip)
		p, _ := cfg.Probe("roundtrip")
		if got := config.FirstRoundSpread(cfg, p); got != tc.want {
			t.Errorf("%d tenants, own peers %v, %q: first round over %s, want %s", tc.tenants, tc.ownPeers, tc.extra, got, tc.want)
		}
	}
}

// The first logins count the round trip's peers (the shared one once) with
// the bots.
func TestFirstLoginsCountPeers(t *testing.T) {
	for _, tc := range []struct {
		ownPeers bool
		want     int
	}{{false, 21}, {true, 40}} {
		cfg := parse(t, tenantsYAML(20, tc.ownPeers)+sharedPeerRoundtrip)
		f := config.CheckFirstLogins(cfg)
		if len(f) != 1 || f[0].Accounts != tc.want {
			t.Errorf("own peers %v: %v, want %d accounts", tc.ownPeers, f, tc.want)
		}
	}
}

// The login probe's full-login interval: stated, or derived from the login
// budgets (at least 1 h); its full logins by password are what the
// rc_login.address check adds up.
func TestLoginFullLoginInterval(t *testing.T) {
	interval := func(cfg *config.Config) time.Duration {
		p, _ := cfg.Probe("login")
		s, err := probetype.SettingsOf[auth.LoginSettings](p)
		if err != nil {
			t.Fatal(err)
		}
		return s.FullLoginInterval.D()
	}
	if got := interval(parse(t, tenantsYAML(3, false)+"probes: [{name: login, type: login, login: {full_login_interval: 2h}}]\n")); got != 2*time.Hour {
		t.Errorf("stated: %s", got)
	}
	if got := interval(parse(t, tenantsYAML(3, false))); got != time.Hour {
		t.Errorf("3 tenants: %s", got)
	}
	// 20 password logins within 80 % of 5 per 27m47s: 139 min.
	cfg := parse(t, tenantsYAML(20, false))
	if got := interval(cfg); got != 139*time.Minute {
		t.Errorf("20 tenants: %s", got)
	}
	if f := config.CheckBudget(cfg); len(f) > 0 {
		t.Errorf("the derived interval exceeds a limit: %v", f)
	}
	cfg = parse(t, tenantsYAML(20, false)+"probes: [{name: login, type: login, login: {full_login_interval: 1h}}]\n")
	f := config.CheckBudget(cfg)
	if len(f) != 1 || f[0].Limiter != "rc_login.address" || !strings.Contains(f[0].Fix, "raise login.full_login_interval to 2h19m") {
		t.Errorf("20 tenants logging in every hour: %v", f)
	}
	for y, want := range map[string]string{
		tenantsYAML(1, false) + "probes:\n  - {name: login, type: login, login: {full_login_interval: -1h}}\n": `c.yml:5: probe "login": login: invalid duration "-1h"`,
		tenantsYAML(1, false) + "probes:\n  - {name: login, type: login, login: {full_login: 1h}}\n":           `c.yml:5: probe "login": login.full_login: unknown field`,
		tenantsYAML(1, false) + "probes:\n  - {name: v, type: versions, login: {full_login_interval: 1h}}\n":   `c.yml:5: probe "v": login: unknown field for probes of type versions`,
	} {
		if _, err := config.Parse([]byte(y), "c.yml", func(string) string { return "" }, kinds()...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v, want %q", err, want)
		}
	}
}

// A login probe whose tenants log in through MAS runs every 5 minutes by
// default; a stated schedule stays.
func TestLoginScheduleWithMAS(t *testing.T) {
	y := `mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'https://api.example.org'}}
tenants:
  - {id: acme, homeserver_url: 'https://m.example.org', bot: {method: mas_oidc, password: x}}
probes:
  - {name: login, type: login}
  - {name: login-1m, type: login, schedule: '@every 1m'}
`
	cfg := parse(t, y)
	if p, _ := cfg.Probe("login"); p.Schedule.Spec != "@every 5m" {
		t.Errorf("a mas_oidc login probe's default schedule: %q", p.Schedule.Spec)
	}
	if p, _ := cfg.Probe("login-1m"); p.Schedule.Spec != "@every 1m" {
		t.Errorf("a stated schedule changed: %q", p.Schedule.Spec)
	}
	if p, _ := parse(t, tenantsYAML(1, false)).Probe("login"); p.Schedule.Spec != "@every 1m" {
		t.Errorf("password tenants' login schedule: %q", p.Schedule.Spec)
	}
}
