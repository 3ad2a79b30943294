package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

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
		y := tenantsYAML(tc.tenants, tc.ownPeers) + tc.extra +
			"probes:\n  - {name: roundtrip, type: roundtrip, roundtrip: {peer: {user: shared, password: z}}}\n"
		cfg, err := Parse([]byte(y), "c.yml", func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		p, _ := cfg.Probe("roundtrip")
		if got := p.Schedule.Interval(time.Now()); got != tc.want {
			t.Errorf("%d tenants, own peers %v, %q: every %s, want %s", tc.tenants, tc.ownPeers, tc.extra, got, tc.want)
		}
		if f := CheckBudget(cfg); len(f) > 0 {
			t.Errorf("the derived default exceeds a limit: %v", f)
		}
	}
}

func TestSynapseLimitsValidation(t *testing.T) {
	y := tenantsYAML(1, true) + `synapse_limits:
  rc_message: {per_second: -1, burst_count: -2}
  login_budget: {logins: 3}
probes:
  - {name: v, type: versions, login: {full_login_interval: 1h}}
`
	_, err := Parse([]byte(y), "c.yml", func(string) string { return "" })
	if err == nil {
		t.Fatal("bad synapse_limits accepted")
	}
	for _, want := range []string{"synapse_limits.rc_message.per_second", "synapse_limits.rc_message.burst_count",
		"synapse_limits.login_budget.window", "login: only for probes of type login"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
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
	y += "]\n"
	cfg, err := Parse([]byte(y), "c.yml", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if f := CheckBudget(cfg); len(f) > 0 {
		t.Fatalf("exempt accounts still reported: %v", f)
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
		y := tenantsYAML(tc.tenants, tc.ownPeers) + tc.extra +
			"probes:\n  - {name: roundtrip, type: roundtrip, roundtrip: {peer: {user: shared, password: z}}}\n"
		cfg, err := Parse([]byte(y), "c.yml", func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		p, _ := cfg.Probe("roundtrip")
		if got := FirstRoundSpread(cfg, p); got != tc.want {
			t.Errorf("%d tenants, own peers %v, %q: first round over %s, want %s", tc.tenants, tc.ownPeers, tc.extra, got, tc.want)
		}
	}
}
