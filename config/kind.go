package config

import (
	"sort"
	"time"
)

// Kind is what the configuration needs to know of a probe type that owns
// its settings (a probetype.Type: probes/matrix's room_message, for one):
// its name, whether it runs per tenant, its default schedule and timeout,
// and what one run costs against Synapse's rate limits. The daemon passes
// the kinds of its registry to Load and Parse; a kind's settings stay raw
// (SettingsNode) for its package to decode.
type Kind struct {
	Name string
	// PerTenant: the probe runs once per tenant (else once for the
	// deployment).
	PerTenant bool
	// Schedule and Timeout are the defaults of a probe of this kind.
	Schedule string
	Timeout  time.Duration
	// BotMessages is the number of events the tenant's bot sends in one
	// run (each counts against rc_message; see CheckBudget).
	BotMessages float64
}

// kindOf returns what the configuration knows of a probe type: a built-in
// type's defaults or a registered kind.
func (c *Config) kindOf(typ string) (Kind, bool) {
	if k, ok := c.kinds[typ]; ok {
		return k, true
	}
	d, ok := probeDefaults[typ]
	if !ok || typ == "" {
		return Kind{}, false
	}
	return Kind{Name: typ, PerTenant: d.perTenant, Schedule: d.schedule, Timeout: time.Duration(d.timeout)}, true
}

// ProbeTypes lists the probe types this configuration accepts (built in and
// registered), sorted.
func (c *Config) ProbeTypes() []string {
	out := ProbeTypes()
	for k := range c.kinds {
		if _, builtin := probeDefaults[k]; !builtin {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (c *Config) setKinds(kinds []Kind) {
	if len(kinds) == 0 {
		return
	}
	c.kinds = make(map[string]Kind, len(kinds))
	for _, k := range kinds {
		c.kinds[k.Name] = k
	}
}
