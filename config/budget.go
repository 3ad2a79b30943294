package config

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// What one run costs against Synapse's limiters (element-hq/synapse
// v1.157.1). A round trip: the bot's createRoom counts rc_room_creation and
// one rc_message (handlers/room.py 1088-1105), its invite rc_invites.per_user
// for the peer (keyed by the invitee), .per_issuer for the bot and one
// rc_message (handlers/room_member.py 379-394, 654), its message and its
// leave one rc_message each (handlers/message.py 1980-1991); the peer's join
// counts rc_joins.local and one rc_message, its leave one rc_message; forget
// creates no event. A probe type that owns its settings says what its runs
// send (Kind.BotMessages: one event for room_message). Every /login counts rc_login.address for the
// client's address (rest/client/login.py 211-262).
const (
	rtBotMessages  = 4
	rtPeerMessages = 2
	// budgetMargin: a schedule must stay below this share of a limiter's
	// long-term rate (scheduling jitter and on-demand runs need room).
	budgetMargin = 0.8
	// minRoundtripInterval is the floor of the derived round-trip default.
	minRoundtripInterval = 10 * time.Minute
)

// DefaultRoundtripInterval is the default schedule of a round-trip probe,
// derived from the limits: the busiest peer account receives one invite,
// makes one join and two events per tenant per round trip, and each bot
// creates one room, all within budgetMargin of rc_invites.per_user,
// rc_joins.local, rc_message and rc_room_creation; never below 10 minutes.
func DefaultRoundtripInterval(c *Config, p *Probe) time.Duration {
	l := &c.SynapseLimits
	if l.Disabled {
		return minRoundtripInterval
	}
	share := 1
	for _, n := range peerLoad(c, p) {
		share = max(share, len(n))
	}
	need := 0.0 // seconds between round trips of one tenant
	per := func(actions float64, r *RateLimit) {
		if r != nil && r.PerSecond > 0 {
			need = max(need, actions/(r.PerSecond*budgetMargin))
		}
	}
	per(float64(share), l.RcInvites.PerUser)
	per(float64(share), l.RcJoins.Local)
	per(float64(share*rtPeerMessages), l.RcMessage)
	per(1, l.RcRoomCreation)
	d := time.Duration(math.Ceil(need/60)) * time.Minute
	return max(d, minRoundtripInterval)
}

// peerLoad maps each peer account (homeserver + user) of a round-trip probe
// to the tenants that use it.
func peerLoad(c *Config, p *Probe) map[string][]*Tenant {
	out := map[string][]*Tenant{}
	for _, t := range c.TenantsFor(p) {
		peer := t.Peer
		if peer == nil && p.Roundtrip != nil {
			peer = p.Roundtrip.Peer
		}
		if peer == nil {
			continue
		}
		k := strings.TrimRight(t.HomeserverURL, "/") + " " + peerName(t, peer)
		out[k] = append(out[k], t)
	}
	return out
}

// peerName names a peer account: its user, or for a fixed token without a
// user, the tenant's own peer or the probe's shared one.
func peerName(t *Tenant, peer *Account) string {
	switch {
	case peer.User != "":
		return peer.User
	case peer == t.Peer:
		return "peer-of-" + t.ID
	}
	return "shared-peer"
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
	type acc struct {
		rate float64 // per second
		why  []string
		hs   string
		// senders are the probes that load the account; other is set when
		// one is not a round trip (the usual fix, rarer round trips, is
		// then not all of it).
		senders []string
		other   bool
	}
	var cur *Probe                        // the probe whose load add counts
	loads := map[string]map[string]*acc{} // limiter → account → load
	add := func(limiter, account, hs string, perSecond float64, why string) {
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
		a.other = a.other || cur.Type != TypeRoundtrip
	}
	exempt := func(t *Tenant, user string) bool { return l.IsExempt(user, t.ServerName) }
	id := func(t *Tenant, user string) string {
		if t.ServerName == "" {
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
		if iv <= 0 {
			continue
		}
		if k := p.kind; k != nil && k.Costs != nil {
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
					exemptAs := cost.ExemptAs
					if exemptAs == "" {
						exemptAs = cost.Account
					}
					if !exempt(t, exemptAs) {
						add(cost.Limiter, id(t, cost.Account), t.HomeserverURL, rate, fmt.Sprintf(why, t.ID))
					}
				}
			}
		}
		switch p.Type {
		case TypeRoundtrip:
			for _, t := range c.TenantsFor(p) {
				peer := t.Peer
				if peer == nil && p.Roundtrip != nil {
					peer = p.Roundtrip.Peer
				}
				bot := id(t, t.Bot.User)
				why := fmt.Sprintf("%s of %s every %s", p.Name, t.ID, Duration(time.Duration(iv*1e9)))
				if !exempt(t, t.Bot.User) {
					add("rc_message", bot, t.HomeserverURL, rtBotMessages/iv, why)
					add("rc_room_creation", bot, t.HomeserverURL, 1/iv, why)
					add("rc_invites.per_issuer", bot, t.HomeserverURL, 1/iv, why)
				}
				if peer == nil {
					continue
				}
				pid := id(t, peerName(t, peer))
				// rc_invites.per_user is keyed by the invitee, but the
				// override checked is the inviter's (api/ratelimiting.py 162-182).
				if !exempt(t, t.Bot.User) {
					add("rc_invites.per_user", pid, t.HomeserverURL, 1/iv, why)
				}
				if !exempt(t, peer.User) {
					add("rc_joins.local", pid, t.HomeserverURL, 1/iv, why)
					add("rc_message", pid, t.HomeserverURL, rtPeerMessages/iv, why)
				}
			}
		case TypeLogin:
			for _, t := range c.TenantsFor(p) {
				if t.Bot.Method == MethodPassword {
					logins += 1 / max(iv, p.FullLoginInterval().Seconds())
					loginTenants++
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
			k := fmt.Sprintf("%.9f/%d/%s/%v/%s", a.rate, len(a.why), a.hs, a.other, strings.Join(a.senders, ","))
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
				Fix: budgetFix(limiter, g.accounts[0], g.a.hs, len(g.a.why), g.a.rate, lim.PerSecond, g.a.senders, g.a.other),
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

func budgetFix(limiter, account, hs string, runs int, rate, allowed float64, senders []string, other bool) string {
	budget := allowed * budgetMargin
	factor := rate / budget
	cmd := func(who string) string {
		return fmt.Sprintf(`curl -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"messages_per_second":0,"burst_count":0}' %s/_synapse/admin/v1/users/%s/override_ratelimit`,
			strings.TrimRight(hs, "/"), who)
	}
	rarer := fmt.Sprintf("make the round trips %.1f× rarer", factor)
	if runs > 1 {
		perTenant := rate / float64(runs)
		peers := int(math.Ceil(factor))
		if perTenant <= budget {
			rarer = fmt.Sprintf("give tenants peers of their own (tenants[].peer: at least %d peers, one per %d tenants), or %s",
				peers, max(1, runs/peers), rarer)
		} else {
			rarer = fmt.Sprintf("give every tenant a peer of its own (tenants[].peer) and make the round trips %.1f× rarer", perTenant/budget)
		}
	}
	if other {
		return fmt.Sprintf("run the probes that send as this account (%s) %.1f× less often in all; or exempt the account: %s, listed in synapse_limits.exempt",
			strings.Join(senders, ", "), factor, cmd(account))
	}
	switch limiter {
	case "rc_invites.per_user":
		return fmt.Sprintf("the peer %s receives the invites of %d round trip(s); %s; or exempt the inviting bots (the override Synapse checks is the inviter's): %s for each bot, listed in synapse_limits.exempt",
			account, runs, rarer, cmd("<bot user id>"))
	case "rc_joins.local", "rc_message":
		if strings.Contains(rarer, "peer") {
			return fmt.Sprintf("%s; or exempt the account: %s, listed in synapse_limits.exempt", rarer, cmd(account))
		}
	}
	return fmt.Sprintf("make the round trips %.1f× rarer (room_message measures delivery every minute without creating rooms); or exempt the account: %s, listed in synapse_limits.exempt",
		factor, cmd(account))
}

// FirstRoundSpread is the shortest time over which the first round of a
// round-trip probe must be spread so that the accounts several tenants
// share (a common peer) stay within their limiters' bursts: a peer shared
// by n tenants receives n invites, makes n joins and sends 2n events in
// that round. 0 when every shared account's bursts hold the round at once.
// The scheduler's short warm-up after a start is never shorter.
func FirstRoundSpread(c *Config, p *Probe) time.Duration {
	l := &c.SynapseLimits
	if l.Disabled {
		return 0
	}
	if p.kind != nil && p.kind.Costs != nil {
		return firstRoundSpreadOf(c, p)
	}
	if p.Type != TypeRoundtrip {
		return 0
	}
	need := 0.0
	for _, ts := range peerLoad(c, p) {
		n := float64(len(ts))
		per := func(actions float64, r *RateLimit) {
			if r != nil && r.PerSecond > 0 && actions > float64(r.BurstCount) {
				need = max(need, (actions-float64(r.BurstCount))/r.PerSecond)
			}
		}
		per(n, l.RcInvites.PerUser)
		per(n, l.RcJoins.Local)
		per(n*rtPeerMessages, l.RcMessage)
	}
	return time.Duration(math.Ceil(need)) * time.Second
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

// firstRoundSpreadOf is FirstRoundSpread for a kind with Costs: the time
// the accounts one round loads beyond their limiters' bursts need.
func firstRoundSpreadOf(c *Config, p *Probe) time.Duration {
	need := 0.0
	for la, n := range accountLoads(c, p) {
		if r := c.SynapseLimits.limiter(la[0]); r != nil && r.PerSecond > 0 && n > float64(r.BurstCount) {
			need = max(need, (n-float64(r.BurstCount))/r.PerSecond)
		}
	}
	return time.Duration(math.Ceil(need)) * time.Second
}
