package main

import (
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
)

// The daemon gives full MAS logins of all tenants one budget (4 per 60 s,
// 15 s apart by default), kept across reloads while unchanged.
func TestMASLoginBudgetWired(t *testing.T) {
	parse := func(budget string) *config.Config {
		t.Helper()
		yml := "global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}\n" +
			"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'http://127.0.0.1:2'}" + budget + "}\n" +
			"tenants:\n  - {id: a, bot: {method: mas_oidc, password: x}}\n  - {id: b, bot: {method: mas_compat_sso, password: x}}\n"
		cfg, err := config.Parse([]byte(yml), "test.yml", func(string) string { return "" }, (&env{}).kinds()...)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	st := newStores(nil, func(string) string { return "" })
	m := st.auth
	// assemble + commit, as a reload does.
	reload := func(cfg *config.Config) error {
		rt, err := assembleProbes(cfg, &env{logger: discard()}, st)
		if err != nil {
			return err
		}
		commitLogin(m, rt, nil)
		return nil
	}
	if err := reload(parse("")); err != nil {
		t.Fatal(err)
	}
	b := m.BudgetFor(config.MethodMASOIDC)
	if b == nil || b.Max != 4 || b.Window != time.Minute || b.MinGap != 15*time.Second || m.BudgetFor(config.MethodMASCompatSSO) != b {
		t.Fatalf("MAS budget %+v", b)
	}
	if m.BudgetFor(config.MethodPassword) == b {
		t.Fatal("password logins share the MAS budget")
	}
	if err := reload(parse("")); err != nil || m.BudgetFor(config.MethodMASOIDC) != b {
		t.Fatal("an unchanged budget was replaced on reload")
	}
	if err := reload(parse(", login_budget: {logins: 2, window: 2m}")); err != nil {
		t.Fatal(err)
	}
	if nb := m.BudgetFor(config.MethodMASOIDC); nb == b || nb.Max != 2 || nb.Window != 2*time.Minute || nb.MinGap != time.Minute {
		t.Fatalf("changed budget %+v", nb)
	}
}
