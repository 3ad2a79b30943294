package config

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// FirstLogins is how long the first full logins of every account of one
// login budget take after a start without stored sessions: until then some
// tenants cannot be probed.
type FirstLogins struct {
	Budget   string // "rc_login.address" or "mas.login_budget"
	Accounts int
	Logins   int
	Window   time.Duration
	MinGap   time.Duration
	// Takes is when the last account's first login is allowed (0: all fit
	// in the budget's burst).
	Takes time.Duration
}

func (f FirstLogins) String() string {
	spread := ""
	if f.MinGap > 0 {
		spread = fmt.Sprintf(", %s apart", Duration(f.MinGap))
	}
	head := fmt.Sprintf("first probe of every tenant: %d accounts need a full login under %s (%d per %s%s)",
		f.Accounts, f.Budget, f.Logins, Duration(f.Window), spread)
	if f.Takes <= 0 {
		return head + ": all at once"
	}
	fix := "raise rc_login.address on the homeserver (and state it in synapse_limits), or log in with access tokens or an application service"
	if f.Budget != "rc_login.address" {
		fix = "raise the provider's token limit and mas.login_budget with it"
	}
	return fmt.Sprintf("%s: the last one about %s after a start; sessions kept in global.data_dir make this a one-time cost per account; to shorten it, %s",
		head, Duration(f.Takes.Round(time.Minute)), fix)
}

// BudgetTime is when the n-th of n logins is allowed under a budget of
// logins per window, at least gap apart, all wanted at once from 0.
func BudgetTime(n, logins int, window, gap time.Duration) time.Duration {
	if n <= 0 || logins <= 0 {
		return 0
	}
	var taken []time.Duration
	at := time.Duration(0)
	for i := 0; i < n; i++ {
		if k := len(taken); k >= logins {
			at = max(at, taken[k-logins]+window)
		}
		if k := len(taken); k > 0 && gap > 0 {
			at = max(at, taken[k-1]+gap)
		}
		taken = append(taken, at)
	}
	return at
}

// CheckFirstLogins says, for each login budget in force, how long the
// first logins of all accounts it covers take (bots, and the other
// accounts the probes' kinds name (Kind.Accounts), each account once).
func CheckFirstLogins(c *Config) []FirstLogins {
	pw, mas := map[string]bool{}, map[string]bool{}
	add := func(t *Tenant, a *Account) {
		if a == nil {
			return
		}
		k := strings.TrimRight(t.HomeserverURL, "/") + " " + a.User + " " + a.Email
		switch {
		case a.Method == MethodPassword:
			pw[k] = true
		case IsMASMethod(a.Method):
			mas[k] = true
		}
	}
	for i := range c.Probes {
		p := &c.Probes[i]
		if p.Disabled {
			continue
		}
		for _, t := range c.TenantsFor(p) {
			add(t, &t.Bot)
			if k := p.kind; k != nil && k.Accounts != nil {
				for _, a := range k.Accounts(c, p, t) {
					add(t, a)
				}
			}
		}
	}
	var out []FirstLogins
	if l := c.SynapseLimits; !l.Disabled && l.LoginBudget.Logins > 0 && len(pw) > 0 {
		b := l.LoginBudget
		out = append(out, FirstLogins{Budget: "rc_login.address", Accounts: len(pw), Logins: b.Logins, Window: b.Window.D(),
			Takes: BudgetTime(len(pw), b.Logins, b.Window.D(), 0)})
	}
	if b := c.MAS.LoginBudget; b.Logins > 0 && b.Window > 0 && len(mas) > 0 {
		out = append(out, FirstLogins{Budget: "mas.login_budget", Accounts: len(mas), Logins: b.Logins, Window: b.Window.D(), MinGap: b.MinGap(),
			Takes: BudgetTime(len(mas), b.Logins, b.Window.D(), b.MinGap())})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Budget > out[j].Budget })
	return out
}
