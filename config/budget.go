package config

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// What one run costs against Synapse's limiters is each probe type's to
// say (Kind.Costs: the round trip's in probes/matrix, the login probe's
// full logins in probes/auth); this file adds them up. Every /login counts
// rc_login.address for the client's address (rest/client/login.py), so
// those costs are added across tenants into one finding.
const (
	// budgetMargin: a schedule must stay below this share of a limiter's
	// long-term rate (scheduling jitter and on-demand runs need room).
	budgetMargin = 0.8
)

// acc is the load of one account against one limiter.
type acc struct {
	rate float64 // per second
	why  []string
	hs   string
	// senders are the probes that load the account; derive is set when
	// the (last) one derives its schedule from the limits.
	senders []string
	derive  bool
	// own is the setting that gives tenants accounts of their own
	// (Cost.OwnAccount); exemptAs the accounts whose override exempts
	// the load when it is not the account's own.
	own      string
	exemptAs []string
}

// BudgetFinding is one limiter a configuration would exceed.
type BudgetFinding struct {
	Limiter string // rc_invites.per_user, ...
	Account string // the account or address the limiter keys on
	// Expected and Allowed are long-term rates in actions per hour.
	Expected float64
	Allowed  float64
	Fix      string
}

func (f BudgetFinding) String() string {
	return fmt.Sprintf("%s for %s: %.1f/h expected, %.1f/h allowed (mxprobe plans within %.0f%% of it); fix: %s",
		f.Limiter, f.Account, f.Expected, f.Allowed, budgetMargin*100, f.Fix)
}

// CheckBudget computes, from the schedules, tenants and peers, the rate each
// account and mxprobe's address will reach against each Synapse limiter and
// returns every limiter the configuration would exceed (beyond
// budgetMargin of its long-term rate), in a stable order.
func CheckBudget(c *Config) []BudgetFinding {
	return append(checkSynapseBudget(c), masBudgetFindings(c)...)
}

func checkSynapseBudget(c *Config) []BudgetFinding {
	l := &c.SynapseLimits
	if l.Disabled {
		return nil
	}
	var cur *Probe                        // the probe whose load add counts
	loads := map[string]map[string]*acc{} // limiter → account → load
	add := func(limiter, account, hs string, perSecond float64, why string, cost Cost, exemptAs string) {
		if loads[limiter] == nil {
			loads[limiter] = map[string]*acc{}
		}
		a := loads[limiter][account]
		if a == nil {
			a = &acc{hs: hs}
			loads[limiter][account] = a
		}
		a.rate += perSecond
		a.why = append(a.why, why)
		if !slices.Contains(a.senders, cur.Name) {
			a.senders = append(a.senders, cur.Name)
		}
		a.derive = cur.kind != nil && cur.kind.DeriveSchedule
		if cost.OwnAccount != "" {
			a.own = cost.OwnAccount
		}
		if exemptAs != account && !slices.Contains(a.exemptAs, exemptAs) {
			a.exemptAs = append(a.exemptAs, exemptAs)
		}
	}
	id := func(t *Tenant, user string) string {
		if t.ServerName == "" || strings.HasPrefix(user, "@") {
			return user
		}
		return "@" + user + ":" + t.ServerName
	}
	logins, loginTenants := 0.0, 0
	for i := range c.Probes {
		p := &c.Probes[i]
		if p.Disabled || p.Schedule.Schedule == nil {
			continue
		}
		cur = p
		iv := p.Schedule.Interval(time.Now()).Seconds()
		k := p.kind
		if iv <= 0 || k == nil || k.Costs == nil {
			continue
		}
		why := fmt.Sprintf("%s of %%s every %s", p.Name, Duration(time.Duration(iv*1e9)))
		for _, t := range c.TenantsFor(p) {
			for _, cost := range k.Costs(c, p, t) {
				if cost.N <= 0 {
					continue
				}
				rate := cost.N / max(iv, cost.Every.Seconds())
				if cost.Limiter == "rc_login.address" {
					logins += rate
					loginTenants++
					continue
				}
				// A limiter keyed by one account may check another's
				// override (rc_invites.per_user: the inviter's).
				exemptAs := cost.ExemptAs
				if exemptAs == "" {
					exemptAs = cost.Account
				}
				if !l.IsExempt(exemptAs, t.ServerName) {
					add(cost.Limiter, id(t, cost.Account), t.HomeserverURL, rate, fmt.Sprintf(why, t.ID), cost, id(t, exemptAs))
				}
			}
		}
	}
	limits := map[string]*RateLimit{
		"rc_message": l.RcMessage, "rc_room_creation": l.RcRoomCreation,
		"rc_invites.per_issuer": l.RcInvites.PerIssuer, "rc_invites.per_user": l.RcInvites.PerUser,
		"rc_joins.local": l.RcJoins.Local,
	}
	var out []BudgetFinding
	for limiter, accounts := range loads {
		lim := limits[limiter]
		if lim == nil || lim.PerSecond <= 0 {
			continue
		}
		// Accounts with the same load share one finding (20 bots each
		// creating a room a minute are one line, not twenty).
		type group struct {
			accounts []string
			a        *acc
		}
		groups := map[string]*group{}
		var order []string
		for account, a := range accounts {
			if a.rate <= lim.PerSecond*budgetMargin {
				continue
			}
			k := fmt.Sprintf("%.9f/%d/%s/%s/%s", a.rate, len(a.why), a.hs, strings.Join(a.senders, ","), a.own)
			if groups[k] == nil {
				groups[k] = &group{a: a}
				order = append(order, k)
			}
			groups[k].accounts = append(groups[k].accounts, account)
		}
		for _, k := range order {
			g := groups[k]
			sort.Strings(g.accounts)
			who := g.accounts[0]
			if len(g.accounts) > 1 {
				who = fmt.Sprintf("%d accounts (%s … %s)", len(g.accounts), g.accounts[0], g.accounts[len(g.accounts)-1])
			}
			out = append(out, BudgetFinding{
				Limiter: limiter, Account: who,
				Expected: g.a.rate * 3600, Allowed: lim.PerSecond * 3600,
				Fix: budgetFix(g.accounts[0], g.a, lim.PerSecond),
			})
		}
	}
	if a := l.RcLogin.Address; a != nil && a.PerSecond > 0 && logins > a.PerSecond*budgetMargin {
		out = append(out, BudgetFinding{
			Limiter: "rc_login.address", Account: "mxprobe's address",
			Expected: logins * 3600, Allowed: a.PerSecond * 3600,
			Fix: fmt.Sprintf("full logins are spread by the login budget (%d per %s), so some tenants log in less often than login.full_login_interval; "+
				"raise login.full_login_interval to %s, or raise rc_login.address on the homeserver and state it in synapse_limits",
				l.LoginBudget.Logins, l.LoginBudget.Window, Duration(time.Duration(float64(loginTenants)/(a.PerSecond*budgetMargin)*1e9)).roundMinute()),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Limiter != out[j].Limiter {
			return out[i].Limiter < out[j].Limiter
		}
		return out[i].Account < out[j].Account
	})
	return out
}

func (d Duration) roundMinute() Duration {
	return Duration(time.Duration(math.Ceil(time.Duration(d).Minutes())) * time.Minute)
}

// budgetFix says how to bring the load a of account within allowed: fewer
// runs of the probes that send as it, accounts of their own for the
// tenants that share it (when the cost names the setting), or an
// exemption.
func budgetFix(account string, a *acc, allowed float64) string {
	budget := allowed * budgetMargin
	factor := a.rate / budget
	cmd := func(who string) string {
		return fmt.Sprintf(`curl -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"messages_per_second":0,"burst_count":0}' %s/_synapse/admin/v1/users/%s/override_ratelimit`,
			strings.TrimRight(a.hs, "/"), who)
	}
	exempt := fmt.Sprintf("exempt the account: %s, listed in synapse_limits.exempt", cmd(account))
	if len(a.exemptAs) > 0 {
		ex := slices.Sorted(slices.Values(a.exemptAs))
		who := ex[0]
		if len(ex) > 1 {
			who = fmt.Sprintf("the %d accounts %s … %s", len(ex), ex[0], ex[len(ex)-1])
		}
		exempt = fmt.Sprintf("exempt %s (the override Synapse checks for this limiter is theirs, not %s's): %s for each, listed in synapse_limits.exempt",
			who, account, cmd("<user id>"))
	}
	if len(a.senders) > 1 {
		return fmt.Sprintf("run the probes that send as this account (%s) %.1f× less often in all; or %s",
			strings.Join(a.senders, ", "), factor, exempt)
	}
	name := a.senders[0]
	rarer := fmt.Sprintf("make the runs of %s %.1f× rarer", name, factor)
	if a.derive {
		rarer += " (or leave its schedule out: the derived one fits the limits)"
	}
	if runs := len(a.why); runs > 1 && a.own != "" {
		perTenant := a.rate / float64(runs)
		n := int(math.Ceil(factor))
		if perTenant <= budget {
			rarer = fmt.Sprintf("%d tenants' runs share this account: give tenants accounts of their own (%s: at least %d, one per %d tenants), or %s",
				runs, a.own, n, max(1, runs/n), rarer)
		} else {
			rarer = fmt.Sprintf("%d tenants' runs share this account: give every tenant an account of its own (%s) and make the runs of %s %.1f× rarer",
				runs, a.own, name, perTenant/budget)
		}
	}
	return rarer + "; or " + exempt
}

// accountLoads adds up, per limiter and account, the actions one round of
// probe p spends (every tenant once), from its kind's Costs; rc_login.address
// and periodic costs are left out (they do not scale with the schedule).
func accountLoads(c *Config, p *Probe) map[[2]string]float64 {
	out := map[[2]string]float64{}
	k := p.kind
	if k == nil || k.Costs == nil {
		return out
	}
	l := &c.SynapseLimits
	for _, t := range c.TenantsFor(p) {
		for _, cost := range k.Costs(c, p, t) {
			if cost.Limiter == "rc_login.address" || cost.Every > 0 || cost.N <= 0 {
				continue
			}
			exemptAs := cost.ExemptAs
			if exemptAs == "" {
				exemptAs = cost.Account
			}
			if l.IsExempt(exemptAs, t.ServerName) {
				continue
			}
			out[[2]string{cost.Limiter, strings.TrimRight(t.HomeserverURL, "/") + " " + cost.Account}] += cost.N
		}
	}
	return out
}

// limiter returns the configured limit of a limiter name (nil: unknown or
// unset).
func (l *SynapseLimits) limiter(name string) *RateLimit {
	switch name {
	case "rc_message":
		return l.RcMessage
	case "rc_room_creation":
		return l.RcRoomCreation
	case "rc_invites.per_issuer":
		return l.RcInvites.PerIssuer
	case "rc_invites.per_user":
		return l.RcInvites.PerUser
	case "rc_joins.local":
		return l.RcJoins.Local
	case "rc_login.address":
		return l.RcLogin.Address
	}
	return nil
}

// deriveSchedules gives every probe of a DeriveSchedule kind that names no
// schedule the shortest whole-minute interval at which the busiest account
// of one round stays within budgetMargin of each limiter's long-term rate,
// never below the kind's default schedule.
func deriveSchedules(c *Config) {
	for i := range c.Probes {
		p := &c.Probes[i]
		k := p.kind
		if k == nil || !k.DeriveSchedule || p.Schedule.Schedule != nil {
			continue
		}
		floor, err := ParseSchedule(k.Schedule)
		if err != nil {
			continue
		}
		d := floor.Interval(time.Now())
		if !c.SynapseLimits.Disabled {
			need := 0.0 // seconds between rounds
			for la, n := range accountLoads(c, p) {
				if r := c.SynapseLimits.limiter(la[0]); r != nil && r.PerSecond > 0 {
					need = max(need, n/(r.PerSecond*budgetMargin))
				}
			}
			d = max(d, time.Duration(math.Ceil(need/60))*time.Minute)
		}
		p.Schedule, _ = ParseSchedule("@every " + strings.TrimSuffix(d.String(), "0s"))
	}
}

// FirstRoundSpread is the shortest time over which the first round of
// probe p must be spread so that the accounts several tenants share (a
// common peer) stay within their limiters' bursts: the actions one round
// spends per account (from the kind's Costs) beyond each burst, at the
// limiter's rate. 0 when every account's bursts hold the round at once.
// The scheduler's short warm-up after a start is never shorter.
func FirstRoundSpread(c *Config, p *Probe) time.Duration {
	if c.SynapseLimits.Disabled {
		return 0
	}
	need := 0.0
	for la, n := range accountLoads(c, p) {
		if r := c.SynapseLimits.limiter(la[0]); r != nil && r.PerSecond > 0 && n > float64(r.BurstCount) {
			need = max(need, (n-float64(r.BurstCount))/r.PerSecond)
		}
	}
	return time.Duration(math.Ceil(need)) * time.Second
}
