package config

import (
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Kind is what the configuration needs to know of a probe type: its name,
// whether it runs per tenant, its default schedule and timeout, its
// settings (decoded, defaulted and validated by the type's own package)
// and what one run costs against the homeserver's rate limiters. The
// daemon passes the kinds of its registry (probetype.Type values) to Load
// and Parse; the configuration knows no probe type of its own.
type Kind struct {
	Name string
	// PerTenant: the probe runs once per tenant (else once for the
	// deployment).
	PerTenant bool
	// Schedule and Timeout are the defaults of a probe of this kind.
	Schedule string
	Timeout  time.Duration
	// DeriveSchedule: a probe of this kind that names no schedule gets the
	// shortest whole-minute interval, never below Schedule's, at which the
	// busiest account stays within the limiters (from Costs, budget.go).
	DeriveSchedule bool
	// Default: a configuration without probes gets one probe of this kind,
	// named after it.
	Default bool
	// SettingsKey is the key of the kind's settings under the probe (empty:
	// none; any other key outside the common structure is an error).
	SettingsKey string
	// Decode (optional) decodes the settings node n (nil when absent) of
	// probe p, applies the defaults and validates them; errors name the
	// file, the line and the field, one per line. It runs after the common
	// defaults (schedule, timeout, tenants, limits) and before the derived
	// schedules; what it returns is held by the probe (Probe.Settings).
	Decode func(c *Config, p *Probe, n *yaml.Node) (any, error)
	// Costs (optional) is what one run of p for tenant t (nil for a global
	// probe) sends against each limiter: the rate-limit check (CheckBudget),
	// the derived schedule and the first round's spread add them up.
	Costs func(c *Config, p *Probe, t *Tenant) []Cost
	// DefaultSchedule (optional) is the default schedule of probe p when it
	// names none, in place of Schedule ("" keeps Schedule): a login probe
	// whose tenants log in through MAS runs every 5 minutes. It runs
	// before the settings are decoded.
	DefaultSchedule func(c *Config, p *Probe) string
	// Accounts (optional) are the accounts a run of p for tenant t logs in
	// as besides t's bot (the round trip's peer): the first-login estimate
	// (CheckFirstLogins) counts them.
	Accounts func(c *Config, p *Probe, t *Tenant) []*Account
}

// Cost is what one run spends against one rate limiter of the homeserver.
type Cost struct {
	// Limiter is the limiter's name in Synapse's configuration:
	// rc_message, rc_room_creation, rc_invites.per_issuer,
	// rc_invites.per_user, rc_joins.local or rc_login.address.
	Limiter string
	// Account is the localpart (or user id) the limiter keys on; empty for
	// rc_login.address, which keys on mxprobe's address.
	Account string
	// ExemptAs (optional) is the account whose override_ratelimit exempts
	// the cost when it is not Account's own: rc_invites.per_user is keyed by
	// the invitee but Synapse checks the inviter's override.
	ExemptAs string
	// N is the number of actions per run.
	N float64
	// Every (optional): the cost is spent at most once per this period
	// rather than at every run (a full login among whoami checks).
	Every time.Duration
	// OwnAccount (optional) is the setting that gives each tenant an
	// account of its own (tenants[].peer) when several tenants' runs spend
	// the cost as one shared account: the rate-limit check's fix names it.
	OwnAccount string
}

// kindOf returns the registered kind of a probe type.
func (c *Config) kindOf(typ string) (Kind, bool) {
	k, ok := c.kinds[typ]
	return k, ok && typ != ""
}

// ProbeTypes lists the probe types this configuration accepts (the
// registered kinds), sorted.
func (c *Config) ProbeTypes() []string {
	out := make([]string, 0, len(c.kinds))
	for k := range c.kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (c *Config) setKinds(kinds []Kind) {
	c.kinds = make(map[string]Kind, len(kinds))
	for _, k := range kinds {
		c.kinds[k.Name] = k
	}
}

// Kind returns the kind of the probe's type (nil for an unknown type).
func (p *Probe) Kind() *Kind { return p.kind }

// Settings is what the kind's Decode returned for the probe (nil when the
// kind has none or decoding failed); probetype.SettingsOf gives it typed.
func (p *Probe) Settings() any { return p.decoded }

// decodeSettings runs the kind's Decode for every probe, collecting every
// probe's problems, one per line.
func decodeSettings(c *Config) Errors {
	var errs Errors
	for i := range c.Probes {
		if err := c.decodeProbe(&c.Probes[i]); err != nil {
			errs = append(errs, strings.Split(err.Error(), "\n")...)
		}
	}
	return errs
}

// decodeProbe decodes one probe's settings with its kind, refusing keys
// no part of the kind reads.
func (c *Config) decodeProbe(p *Probe) error {
	p.decoded = nil
	k := p.kind
	if k == nil {
		return nil // an unknown type: validate reports it
	}
	var errs Errors
	for _, key := range p.SettingsKeys() {
		if key != k.SettingsKey {
			errs = append(errs, c.UnknownSettings(p, key).Error())
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if k.Decode == nil {
		return nil
	}
	v, err := k.Decode(c, p, p.SettingsNode(k.SettingsKey))
	if err != nil {
		return err
	}
	p.decoded = v
	return nil
}

// Decode decodes the probe's settings again (a probe EnsureProbe added,
// after the command line's adjustments) and derives its schedule.
func (c *Config) Decode(p *Probe) error {
	if err := c.decodeProbe(p); err != nil {
		return err
	}
	deriveSchedules(c)
	return nil
}

// Equal reports whether c and o are the same configuration: the same
// file contents, environment and registered kinds (a kind is compared by
// name, since its functions cannot be).
func (c *Config) Equal(o *Config) bool {
	if c == nil || o == nil {
		return c == o
	}
	strip := func(x *Config) Config {
		y := *x
		y.kinds = nil
		y.Probes = append([]Probe(nil), x.Probes...)
		for i := range y.Probes {
			y.Probes[i].kind = nil
		}
		return y
	}
	a, b := strip(c), strip(o)
	if !reflect.DeepEqual(a, b) || len(c.kinds) != len(o.kinds) {
		return false
	}
	for name := range c.kinds {
		if _, ok := o.kinds[name]; !ok {
			return false
		}
	}
	return true
}

// SetSettings replaces the raw settings node of the probe's kind and
// decodes it again (`mxprobe run --target`, tests); on error the probe
// keeps no settings.
func (c *Config) SetSettings(p *Probe, n *yaml.Node) error {
	if p.kind == nil {
		return c.UnknownSettings(p, "")
	}
	p.SetSettingsNode(p.kind.SettingsKey, n)
	return c.decodeProbe(p)
}
