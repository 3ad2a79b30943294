package config

import (
	"math"
	"time"
)

// The login probe (probes/auth's LoginType) owns its settings; the
// arithmetic of its defaults against the login budgets lives here, with
// the budgets.

// MinFullLoginInterval is the floor of the login probe's full-login
// interval.
const MinFullLoginInterval = time.Hour

// DefaultFullLoginInterval is the full-login interval of a login probe p
// that states none: every tenant of p whose bot logs in by password once
// per interval within budgetMargin of the login budget (only password
// logins reach the homeserver's /login; MAS answers the others, as
// CheckBudget counts them), and every MAS tenant within the MAS login
// budget; never below MinFullLoginInterval.
func DefaultFullLoginInterval(c *Config, p *Probe) time.Duration {
	d := MinFullLoginInterval
	b := c.SynapseLimits.LoginBudget
	if !c.SynapseLimits.Disabled && b.Logins > 0 && b.Window > 0 {
		n := 0.0
		for _, t := range c.TenantsFor(p) {
			if t.Bot.Method == MethodPassword {
				n++
			}
		}
		need := time.Duration(n * float64(b.Window.D()) / float64(b.Logins) / budgetMargin)
		d = max(d, time.Duration(math.Ceil(need.Minutes()))*time.Minute)
	}
	return max(d, masFullLoginInterval(c, p))
}
