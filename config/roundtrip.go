package config

import (
	"fmt"
	"strings"
	"time"
)

// Round-trip defaults.
const (
	// DefaultMinPowerLevel is the Matrix moderator level: the "host moderator
	// privileges" the platform's bot needs (kick, redact). The creator of a
	// probe room holds 100, so the round trip passes unless the homeserver
	// hands out less.
	DefaultMinPowerLevel = 50
	// DefaultRoomNamePrefix starts the name of every probe room.
	DefaultRoomNamePrefix = "mxprobe-probe "
	defaultSyncTimeout    = 10 * time.Second
	defaultCleanupTimeout = 10 * time.Second
	defaultSweepMaxAge    = 15 * time.Minute
	defaultSweepInterval  = time.Hour
)

// RoundtripConfig configures the room round-trip probe.
type RoundtripConfig struct {
	// Peer is the shared peer account, used for tenants that have none.
	Peer *Account `yaml:"peer" json:"peer,omitempty"`
	// MinPowerLevel is the power level the bot must hold in its rooms.
	MinPowerLevel *int `yaml:"min_power_level" json:"min_power_level,omitempty"`
	// RoomNamePrefix starts the name of probe rooms, so leftovers are
	// recognisable by people too (the sweep goes by a state event).
	RoomNamePrefix string `yaml:"room_name_prefix" json:"room_name_prefix"`
	// SyncTimeout is the long-poll timeout of one /sync while waiting for
	// the message (capped by the run's deadline).
	SyncTimeout Duration `yaml:"sync_timeout" json:"sync_timeout"`
	// CleanupTimeout is the deadline of leave + forget, which run after a
	// failure or timeout too.
	CleanupTimeout Duration `yaml:"cleanup_timeout" json:"cleanup_timeout"`
	// SweepMaxAge: probe rooms older than this that a crash left behind are
	// left and forgotten by the sweep.
	SweepMaxAge Duration `yaml:"sweep_max_age" json:"sweep_max_age"`
	// SweepInterval is how often the sweep runs (at the first run of each
	// tenant, then at most this often). 0 keeps the default; a negative
	// value is an error.
	SweepInterval Duration `yaml:"sweep_interval" json:"sweep_interval"`
}

// MinPower returns the configured minimum power level or the default.
func (r *RoundtripConfig) MinPower() int {
	if r == nil || r.MinPowerLevel == nil {
		return DefaultMinPowerLevel
	}
	return *r.MinPowerLevel
}

func applyRoundtripDefaults(c *Config) {
	for i := range c.Probes {
		p := &c.Probes[i]
		switch p.Type {
		case TypeRoundtrip:
			if p.Roundtrip == nil {
				p.Roundtrip = &RoundtripConfig{}
			}
			r := p.Roundtrip
			if r.MinPowerLevel == nil {
				v := DefaultMinPowerLevel
				r.MinPowerLevel = &v
			}
			if r.RoomNamePrefix == "" {
				r.RoomNamePrefix = DefaultRoomNamePrefix
			}
			if r.SyncTimeout == 0 {
				r.SyncTimeout = Duration(defaultSyncTimeout)
			}
			if r.CleanupTimeout == 0 {
				r.CleanupTimeout = Duration(defaultCleanupTimeout)
			}
			if r.SweepMaxAge == 0 {
				r.SweepMaxAge = Duration(max(defaultSweepMaxAge, 2*(p.Timeout.D()+r.CleanupTimeout.D())))
			}
			if r.SweepInterval == 0 {
				r.SweepInterval = Duration(defaultSweepInterval)
			}
			if r.Peer != nil && r.Peer.Method == "" {
				r.Peer.Method = MethodPassword
			}
			if p.Schedule.Schedule == nil {
				p.Schedule, _ = ParseSchedule("@every " + strings.TrimSuffix(DefaultRoundtripInterval(c, p).String(), "0s"))
			}
		}
	}
}

func validateRoundtrip(c *Config) Errors {
	var errs Errors
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	for i := range c.Probes {
		p := &c.Probes[i]
		w := c.probeWhere(p)
		if p.Roundtrip != nil && p.Type != TypeRoundtrip {
			add("%s: roundtrip: only for probes of type %s", w, TypeRoundtrip)
		}
		switch p.Type {
		case TypeRoundtrip:
			r := p.Roundtrip
			if r == nil {
				continue
			}
			if r.Peer != nil {
				errs = append(errs, c.validateAccount(w+": roundtrip.peer", r.Peer)...)
			}
			if lvl := r.MinPower(); lvl < 0 || lvl > 100 {
				add("%s: roundtrip.min_power_level: %d is outside 0..100", w, lvl)
			}
			if r.SyncTimeout < 0 {
				add("%s: roundtrip.sync_timeout: must be positive", w)
			}
			if r.CleanupTimeout < 0 {
				add("%s: roundtrip.cleanup_timeout: must be positive", w)
			}
			if r.SweepInterval < 0 {
				add("%s: roundtrip.sweep_interval: must be positive", w)
			}
			if r.SweepMaxAge > 0 && r.SweepMaxAge < p.Timeout+r.CleanupTimeout {
				add("%s: roundtrip.sweep_max_age: %s is shorter than timeout + cleanup_timeout (%s); the sweep could remove the room of a run in flight",
					w, r.SweepMaxAge, Duration(p.Timeout+r.CleanupTimeout))
			} else if r.SweepMaxAge < 0 {
				add("%s: roundtrip.sweep_max_age: must be positive", w)
			}
			for _, t := range c.TenantsFor(p) {
				peer := t.Peer
				if peer == nil {
					peer = r.Peer
				}
				if peer == nil {
					add("%s: roundtrip.peer: missing, and tenant %q has no peer of its own (the round trip invites a second account)", w, t.ID)
					continue
				}
				if peer.User != "" && peer.User == t.Bot.User && peer.Method != MethodToken {
					add("%s: tenant %q: the peer must be another account than the bot (%q)", w, t.ID, peer.User)
				}
			}
		}
	}
	return errs
}

func validRoomID(s string) bool {
	return strings.HasPrefix(s, "!") && len(s) > 1 && !strings.ContainsAny(s, " \t\r\n/")
}
