package config

import (
	"fmt"
	"math"
	"time"
)

// RateLimit is one Synapse limiter: burst_count actions at once, refilled at
// per_second (Synapse's RatelimitSettings).
type RateLimit struct {
	PerSecond  float64 `yaml:"per_second" json:"per_second"`
	BurstCount int     `yaml:"burst_count" json:"burst_count"`
}

// SynapseLimits states the rate limits of the homeserver the probes talk to,
// so the budget check and the derived defaults fit them. Unset limiters
// keep Synapse's defaults (element-hq/synapse v1.157.1,
// synapse/config/ratelimiting.py).
type SynapseLimits struct {
	// Disabled: the homeserver applies none of these limits (the budget
	// check reports nothing and no login budget applies).
	Disabled bool `yaml:"disabled" json:"disabled"`
	// Exempt lists accounts (localparts or user ids) an admin exempted with
	// POST /_synapse/admin/v1/users/<user_id>/override_ratelimit
	// {"messages_per_second": 0, "burst_count": 0}: no limiter keyed by the
	// requester applies to them (rc_login does not care).
	Exempt []string `yaml:"exempt" json:"exempt,omitempty"`

	RcMessage      *RateLimit `yaml:"rc_message" json:"rc_message,omitempty"`
	RcRoomCreation *RateLimit `yaml:"rc_room_creation" json:"rc_room_creation,omitempty"`
	RcJoins        struct {
		Local *RateLimit `yaml:"local" json:"local,omitempty"`
	} `yaml:"rc_joins" json:"rc_joins"`
	RcInvites struct {
		PerRoom   *RateLimit `yaml:"per_room" json:"per_room,omitempty"`
		PerUser   *RateLimit `yaml:"per_user" json:"per_user,omitempty"`
		PerIssuer *RateLimit `yaml:"per_issuer" json:"per_issuer,omitempty"`
	} `yaml:"rc_invites" json:"rc_invites"`
	RcLogin struct {
		Address *RateLimit `yaml:"address" json:"address,omitempty"`
		Account *RateLimit `yaml:"account" json:"account,omitempty"`
	} `yaml:"rc_login" json:"rc_login"`

	// LoginBudget caps the full logins mxprobe makes against the
	// homeserver's /login from its one address, over a sliding window. By
	// default rc_login.address's burst_count logins per burst_count /
	// per_second (5 per 27m45s): never more than the token bucket holds.
	LoginBudget LoginBudget `yaml:"login_budget" json:"login_budget"`
}

// LoginBudget is at most Logins full logins in any Window.
type LoginBudget struct {
	Logins int      `yaml:"logins" json:"logins"`
	Window Duration `yaml:"window" json:"window"`
}

// Synapse's defaults (synapse/config/ratelimiting.py v1.157.1).
var (
	defaultRcMessage      = RateLimit{0.2, 10}
	defaultRcRoomCreation = RateLimit{0.016, 10}
	defaultRcJoinsLocal   = RateLimit{0.1, 10}
	defaultRcInvitesRoom  = RateLimit{0.3, 10}
	defaultRcInvitesUser  = RateLimit{0.003, 5}
	defaultRcInvitesIssue = RateLimit{0.3, 10}
	defaultRcLoginAddress = RateLimit{0.003, 5}
	defaultRcLoginAccount = RateLimit{0.003, 5}
)

func applyLimitsDefaults(c *Config) {
	l := &c.SynapseLimits
	set := func(p **RateLimit, d RateLimit) {
		if *p == nil {
			v := d
			*p = &v
		}
	}
	set(&l.RcMessage, defaultRcMessage)
	set(&l.RcRoomCreation, defaultRcRoomCreation)
	set(&l.RcJoins.Local, defaultRcJoinsLocal)
	set(&l.RcInvites.PerRoom, defaultRcInvitesRoom)
	set(&l.RcInvites.PerUser, defaultRcInvitesUser)
	set(&l.RcInvites.PerIssuer, defaultRcInvitesIssue)
	set(&l.RcLogin.Address, defaultRcLoginAddress)
	set(&l.RcLogin.Account, defaultRcLoginAccount)
	if l.LoginBudget.Logins == 0 && l.LoginBudget.Window == 0 {
		a := l.RcLogin.Address
		if a.PerSecond > 0 && a.BurstCount > 0 {
			l.LoginBudget.Logins = a.BurstCount
			l.LoginBudget.Window = Duration(math.Ceil(float64(a.BurstCount)/a.PerSecond) * float64(time.Second))
		}
	}
}

func validateLimits(c *Config) Errors {
	var errs Errors
	l := &c.SynapseLimits
	check := func(name string, r *RateLimit) {
		if r == nil {
			return
		}
		if r.PerSecond < 0 || math.IsNaN(r.PerSecond) || math.IsInf(r.PerSecond, 0) {
			errs = append(errs, fmt.Sprintf("synapse_limits.%s.per_second: %v must be 0 or more", name, r.PerSecond))
		}
		if r.BurstCount < 0 {
			errs = append(errs, fmt.Sprintf("synapse_limits.%s.burst_count: %d must be 0 or more", name, r.BurstCount))
		}
	}
	check("rc_message", l.RcMessage)
	check("rc_room_creation", l.RcRoomCreation)
	check("rc_joins.local", l.RcJoins.Local)
	check("rc_invites.per_room", l.RcInvites.PerRoom)
	check("rc_invites.per_user", l.RcInvites.PerUser)
	check("rc_invites.per_issuer", l.RcInvites.PerIssuer)
	check("rc_login.address", l.RcLogin.Address)
	check("rc_login.account", l.RcLogin.Account)
	if l.LoginBudget.Logins < 0 {
		errs = append(errs, "synapse_limits.login_budget.logins: must be 0 or more")
	}
	if l.LoginBudget.Window < 0 || (l.LoginBudget.Logins > 0 && l.LoginBudget.Window == 0) {
		errs = append(errs, "synapse_limits.login_budget.window: must be positive when logins is set")
	}
	return errs
}

// IsExempt reports whether an account (localpart user on server) is listed
// in synapse_limits.exempt.
func (l *SynapseLimits) IsExempt(user, server string) bool {
	if user == "" {
		return false
	}
	full := "@" + user + ":" + server
	for _, e := range l.Exempt {
		if e == user || e == full {
			return true
		}
	}
	return false
}
