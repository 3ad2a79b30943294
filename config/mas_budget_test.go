package config

import (
	"strings"
	"testing"
	"time"
)

const masBudgetBase = "mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'https://api.example.org'}}\n"

func TestMASBudgetDefaults(t *testing.T) {
	cfg, err := parseMAS(t, masBudgetBase+masTenant+`probes:
  - {name: login, type: login}
  - {name: login-1m, type: login, schedule: '@every 1m'}
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.MAS.LoginBudget
	if b.Logins != 4 || b.Window.D() != time.Minute || b.MinGap() != 15*time.Second {
		t.Fatalf("budget %+v gap %s", b, b.MinGap())
	}
	p, _ := cfg.Probe("login")
	if p.Schedule.Spec != "@every 5m" {
		t.Errorf("a mas_oidc login probe's default schedule: %q", p.Schedule.Spec)
	}
	if p, _ := cfg.Probe("login-1m"); p.Schedule.Spec != "@every 1m" {
		t.Errorf("a stated schedule changed: %q", p.Schedule.Spec)
	}
	if f := masBudgetFindings(cfg); len(f) != 0 {
		t.Errorf("findings for the default budget: %v", f)
	}
	// A password tenant keeps the 1 min default.
	cfg, err = parseMAS(t, "tenants:\n  - {id: pw, homeserver_url: 'https://m.example.org', bot: {method: password, user: b, password: x}}\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := cfg.Probe("login"); p.Schedule.Spec != "@every 1m" {
		t.Errorf("password tenants' login schedule: %q", p.Schedule.Spec)
	}
}

// 50 MAS tenants: one full login each per interval within 80 % of 4/min
// needs 16 min; the 1 h floor stays.
func TestMASBudgetFullLoginInterval(t *testing.T) {
	var tb strings.Builder
	tb.WriteString("tenants:\n")
	for i := 0; i < 50; i++ {
		tb.WriteString("  - {id: t" + string(rune('a'+i/26)) + string(rune('a'+i%26)) + ", homeserver_url: 'https://m.example.org', bot: {method: mas_oidc, password: x}}\n")
	}
	cfg, err := parseMAS(t, masBudgetBase+tb.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Probe("login")
	if got := masFullLoginInterval(cfg, p); got != 16*time.Minute {
		t.Errorf("MAS need %s, want 16m", got)
	}
	if got := DefaultFullLoginInterval(cfg, p); got != time.Hour {
		t.Errorf("full_login_interval %s", got)
	}
	cfg, err = parseMAS(t, "mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'https://api.example.org'}, login_budget: {logins: 1, window: 10s}}\n"+tb.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _ = cfg.Probe("login")
	if got := DefaultFullLoginInterval(cfg, p); got != time.Hour {
		t.Errorf("full_login_interval %s", got)
	}
}

func TestMASBudgetValidationAndFindings(t *testing.T) {
	for _, tc := range []struct{ budget, want string }{
		{"{logins: -1}", "mas.login_budget.logins: must be 1 or more"},
	} {
		_, err := parseMAS(t, "mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'https://api.example.org'}, login_budget: "+tc.budget+"}\n"+masTenant, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.budget, err, tc.want)
		}
	}
	for _, tc := range []struct {
		budget   string
		findings int
	}{
		{"{logins: 4, window: 60s}", 0}, {"{logins: 5, window: 60s}", 1}, {"{logins: 3, window: 30s}", 1},
		{"{logins: 4, window: 2m}", 0}, {"{logins: 6, window: 2m}", 1},
	} {
		cfg, err := parseMAS(t, "mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'https://api.example.org'}, login_budget: "+tc.budget+"}\n"+masTenant, nil)
		if err != nil {
			t.Fatal(err)
		}
		f := CheckBudget(cfg)
		n := 0
		for _, x := range f {
			if strings.Contains(x.Limiter, "upstream provider") {
				n++
				if !strings.Contains(x.String(), "429") {
					t.Errorf("finding without its consequence: %s", x)
				}
			}
		}
		if n != tc.findings {
			t.Errorf("%s: %d provider findings, want %d: %v", tc.budget, n, tc.findings, f)
		}
	}
}
