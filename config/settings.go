package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Probe types that own their schema (probes/matrix's room_message, for one)
// read their settings from the probe's YAML mapping themselves: the config
// package keeps the common structure (name, type, schedule, timeout,
// tenants) and the other keys raw.

// DefaultSyncTimeout is the default long-poll timeout of one /sync.
const DefaultSyncTimeout = 10 * time.Second

// SettingsNode returns the raw YAML node of the probe's key (nil when
// absent), for the probe type that owns that key to decode.
func (p *Probe) SettingsNode(key string) *yaml.Node { return p.settings[key] }

// SettingsKeys are the keys of the probe's mapping outside the common
// structure, sorted: each must be claimed by the probe's type.
func (p *Probe) SettingsKeys() []string {
	out := make([]string, 0, len(p.settings))
	for k := range p.settings {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// SetSettingsNode sets the raw YAML node of a key (tests, and probes
// added without a file).
func (p *Probe) SetSettingsNode(key string, n *yaml.Node) {
	if p.settings == nil {
		p.settings = map[string]*yaml.Node{}
	}
	p.settings[key] = n
}

// ProbeWhere names a probe in error messages ("file:line: probe \"x\"").
func (c *Config) ProbeWhere(p *Probe) string { return c.probeWhere(p) }

// TenantWhere names a tenant in error messages.
func (c *Config) TenantWhere(t *Tenant) string { return c.where(t) }

// ValidRoomID reports whether s looks like a room id (!opaque:server).
func ValidRoomID(s string) bool {
	return strings.HasPrefix(s, "!") && len(s) > 1 && !strings.ContainsAny(s, " \t\r\n/")
}

// ValidateAccount checks an account a probe type's settings name (the
// round trip's shared peer) as the tenants' own are checked; w names it
// in the errors ("file:line: probe \"x\": roundtrip.peer").
func (c *Config) ValidateAccount(w string, a *Account) Errors { return c.validateAccount(w, a) }

// UnknownSettings is the error for a key no part of the probe's type reads.
func (c *Config) UnknownSettings(p *Probe, key string) error {
	w := c.probeWhere(p)
	if n := p.settings[key]; n != nil && n.Line > 0 {
		w = fmt.Sprintf("%s:%d: probe %q", c.File, n.Line, p.Name)
	}
	return fmt.Errorf("%s: %s: unknown field for probes of type %s", w, key, p.Type)
}

// YAMLKeys are the keys yaml.v3 decodes into the fields of a struct type
// (a field without a tag under its lower-cased name), for probe types that
// refuse unknown settings keys.
func YAMLKeys(t reflect.Type) map[string]bool { return yamlKeys(t) }

// yamlKeys are the YAML keys of a struct type's fields.
func yamlKeys(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = true
	}
	return out
}

// CheckURL checks an http(s) URL a setting names (scheme, host, no
// credentials), for probe types that validate their own settings.
func CheckURL(s string) error { return checkURL(s) }

// ParsePrefixes reads a list of CIDR ranges and addresses (an address is a
// /32 or /128 range), for probe types that validate their own settings.
func ParsePrefixes(list []string) ([]netip.Prefix, error) { return parsePrefixes(list) }
