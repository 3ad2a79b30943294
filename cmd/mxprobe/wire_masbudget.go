package main

import (
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// The MAS login budget: every full login through MAS ends with a code
// exchange at the upstream provider's token endpoint, which OpenMeet limits
// per address (MAS's, shared with every real user), so full MAS logins of
// all tenants share one budget, spread out.
func init() {
	managerHooks = append(managerHooks, func(m *auth.Manager, cfg *config.Config) error {
		b := cfg.MAS.LoginBudget
		methods := []string{config.MethodMASOIDC, config.MethodMASCompatSSO}
		if b.Logins <= 0 || b.Window <= 0 {
			m.SetBudget(nil, methods...)
			return nil
		}
		// Keep the window's history across reloads when the budget is unchanged.
		if cur := m.BudgetFor(config.MethodMASOIDC); cur != nil && cur.Max == b.Logins && cur.Window == b.Window.D() {
			return nil
		}
		m.SetBudget(&auth.Budget{Name: "the upstream provider's token endpoint limit (mas.login_budget)",
			Max: b.Logins, Window: b.Window.D(), MinGap: b.MinGap()}, methods...)
		return nil
	})
}
