package config

import (
	"math"
	"time"
)

// LoginProbeConfig configures the login probe.
type LoginProbeConfig struct {
	// FullLoginInterval is how often the probe logs a tenant's bot in
	// afresh; the runs in between prove the session with whoami (and a
	// refresh when it is about to expire). 0 derives it from the login
	// budget and the number of tenants (at least 1h).
	FullLoginInterval Duration `yaml:"full_login_interval" json:"full_login_interval"`
}

const minFullLoginInterval = time.Hour

// FullLoginInterval returns the login probe's full-login interval.
func (p *Probe) FullLoginInterval() time.Duration {
	if p.Login != nil && p.Login.FullLoginInterval > 0 {
		return p.Login.FullLoginInterval.D()
	}
	return minFullLoginInterval
}

func applyLoginDefaults(c *Config) {
	for i := range c.Probes {
		p := &c.Probes[i]
		if p.Type != TypeLogin {
			continue
		}
		if p.Login == nil {
			p.Login = &LoginProbeConfig{}
		}
		if p.Login.FullLoginInterval > 0 {
			continue
		}
		d := minFullLoginInterval
		b := c.SynapseLimits.LoginBudget
		if !c.SynapseLimits.Disabled && b.Logins > 0 && b.Window > 0 {
			// Every tenant once per interval, within budgetMargin of the budget.
			// Only password logins reach the homeserver's /login (MAS
			// answers the others), as CheckBudget counts them.
			n := 0.0
			for _, t := range c.TenantsFor(p) {
				if t.Bot.Method == MethodPassword {
					n++
				}
			}
			need := time.Duration(n * float64(b.Window.D()) / float64(b.Logins) / budgetMargin)
			d = max(d, time.Duration(math.Ceil(need.Minutes()))*time.Minute)
		}
		d = max(d, masFullLoginInterval(c, p))
		p.Login.FullLoginInterval = Duration(d)
	}
}

func validateLogin(c *Config) Errors {
	var errs Errors
	for i := range c.Probes {
		p := &c.Probes[i]
		if p.Login != nil && p.Type != TypeLogin {
			errs = append(errs, c.probeWhere(p)+": login: only for probes of type "+TypeLogin)
		}
		if p.Login != nil && p.Login.FullLoginInterval < 0 {
			errs = append(errs, c.probeWhere(p)+": login.full_login_interval: must be positive")
		}
	}
	return errs
}
