package main

import (
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// The MAS login budget: every full login through MAS ends with a code
// exchange at the upstream provider's token endpoint, which OpenMeet limits
// per address (MAS's, shared with every real user), so full MAS logins of
// all tenants share one budget, spread out.

// masBudgetMethods are the login methods that share the MAS budget.
func masBudgetMethods() []string {
	return []string{config.MethodMASOIDC, config.MethodMASCompatSSO}
}

// masLoginBudget is the MAS logins' budget for cfg: nil without one, the
// budget in force on m when unchanged (its window's history is kept).
func masLoginBudget(cfg *config.Config, m *auth.Manager, store auth.BudgetStore) *auth.Budget {
	b := cfg.MAS.LoginBudget
	if b.Logins <= 0 || b.Window <= 0 {
		return nil
	}
	if cur := m.BudgetFor(config.MethodMASOIDC); cur != nil && cur.Max == b.Logins && cur.Window == b.Window.D() && cur.MinGap == b.MinGap() {
		return cur
	}
	nb := &auth.Budget{Name: "the upstream provider's token endpoint limit (mas.login_budget)",
		Max: b.Logins, Window: b.Window.D(), MinGap: b.MinGap(), Store: store, Key: "mas"}
	nb.Restore()
	return nb
}
