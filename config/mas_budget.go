package config

import (
	"fmt"
	"math"
	"time"
)

// The upstream provider's limit on full MAS logins. Every full login
// through MAS ends with MAS exchanging the provider's code at its token
// endpoint; OpenMeet limits that endpoint to 10 requests per minute keyed by
// the caller's address (MAS's, shared by every user of every tenant) and
// counts each request twice, so the 6th exchange in any sliding minute is
// refused and blocks everyone behind MAS for 60 s (openmeet-api: the
// @Throttle of OidcController.token in src/oidc/oidc.controller.ts, and
// the global MultiLayerThrottlerGuard that AppModule installs in
// src/app.module.ts).
const (
	// DefaultMASLoginBudgetLogins full MAS logins in any
	// DefaultMASLoginBudgetWindow: one below the provider's 5, leaving room
	// for the platform's real users.
	DefaultMASLoginBudgetLogins = 4
	DefaultMASLoginBudgetWindow = time.Minute
	// providerExchangesPerWindow is what the provider lets through in its
	// window (10 per minute, counted twice).
	providerExchangesPerWindow = 5
	// masLoginSchedule is the default schedule of a login probe whose
	// tenants log in through MAS.
	masLoginSchedule = "@every 5m"
)

// MASLoginBudget caps full logins through MAS (mas_oidc, mas_compat_sso)
// across all tenants: at most Logins in any sliding Window, spread at least
// Window/Logins apart.
type MASLoginBudget struct {
	Logins int      `yaml:"logins" json:"logins"`
	Window Duration `yaml:"window" json:"window"`
}

// MinGap is the spacing of full MAS logins (Window / Logins).
func (b MASLoginBudget) MinGap() time.Duration {
	if b.Logins <= 0 {
		return 0
	}
	return b.Window.D() / time.Duration(b.Logins)
}

func applyMASBudgetDefaults(c *Config) {
	b := &c.MAS.LoginBudget
	if b.Logins == 0 {
		b.Logins = DefaultMASLoginBudgetLogins
	}
	if b.Window == 0 {
		b.Window = Duration(DefaultMASLoginBudgetWindow)
	}
}

// MASLoginSchedule is the default schedule of a login probe p one of whose
// tenants logs in through MAS (@every 5m); "" when none does.
func MASLoginSchedule(c *Config, p *Probe) string {
	for _, t := range c.TenantsFor(p) {
		if t.Bot.Method == MethodMASOIDC || t.Bot.Method == MethodMASCompatSSO {
			return masLoginSchedule
		}
	}
	return ""
}

func validateMASBudget(c *Config) Errors {
	b := c.MAS.LoginBudget
	var errs Errors
	if b.Logins < 0 {
		errs = append(errs, fmt.Sprintf("%s: mas.login_budget.logins: must be 1 or more", c.File))
	}
	if b.Window < 0 {
		errs = append(errs, fmt.Sprintf("%s: mas.login_budget.window: must be positive", c.File))
	}
	return errs
}

// masBudgetFindings reports a MAS login budget that lets more code
// exchanges through in a minute than OpenMeet's provider allows.
func masBudgetFindings(c *Config) []BudgetFinding {
	oidc, sso := c.usesMAS()
	b := c.MAS.LoginBudget
	if !oidc && !sso || b.Logins <= 0 || b.Window <= 0 {
		return nil
	}
	// The most full logins any 60 s can hold under the budget.
	windows := int((time.Minute + b.Window.D() - 1) / b.Window.D())
	perMinute := windows * b.Logins
	if b.Window.D() > time.Minute {
		perMinute = b.Logins
	}
	if perMinute <= providerExchangesPerWindow-1 {
		return nil
	}
	return []BudgetFinding{{
		Limiter: "the upstream provider's token endpoint (OpenMeet: 10 per minute, each request counted twice)",
		Account: "MAS's address (every user's login)",
		// Per hour: the most the budget allows, and the provider's 5 per minute.
		Expected: float64(perMinute * 60), Allowed: providerExchangesPerWindow * 60,
		Fix: fmt.Sprintf("mas.login_budget allows %d full MAS logins within a minute; the 6th code exchange in a minute gets 429 and "+
			"blocks every login through MAS for 60 s: set mas.login_budget to at most 4 per 60s", perMinute),
	}}
}

// masFullLoginInterval is the full-login interval that lets every tenant of
// p that logs in through MAS do one full login per interval within
// budgetMargin of the MAS login budget (rounded up to minutes).
func masFullLoginInterval(c *Config, p *Probe) time.Duration {
	b := c.MAS.LoginBudget
	if b.Logins <= 0 || b.Window <= 0 {
		return 0
	}
	n := 0
	for _, t := range c.TenantsFor(p) {
		if t.Bot.Method == MethodMASOIDC || t.Bot.Method == MethodMASCompatSSO {
			n++
		}
	}
	need := time.Duration(float64(n) * float64(b.Window.D()) / float64(b.Logins) / budgetMargin)
	return time.Duration(math.Ceil(need.Minutes())) * time.Minute
}
