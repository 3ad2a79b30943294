package matrix

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeRoomMessage is the room_message probe type's name.
const TypeRoomMessage = "room_message"

// Steps of room_message runs (the login's own steps come before, named by
// the login method).
const (
	StepLogin       = "login"
	StepSync        = "sync"
	StepJoin        = "join"
	StepSend        = "send"
	StepReceive     = "receive"
	StepPowerLevels = "power_levels"
)

// RoomMessageType is the room_message probe type: its settings live under
// the probe's `room_message:` key, with their defaults and validation here.
// It runs every minute by default and sends one event per run (the bot
// joins the persistent room once).
func RoomMessageType() probetype.Type {
	return probetype.Define(probetype.Def[RoomMessageSettings]{
		Name: TypeRoomMessage, PerTenant: true, Schedule: "@every 1m", Timeout: 30 * time.Second,
		SettingsKey: "room_message",
		Steps:       []string{StepLogin, StepSync, StepJoin, StepSend, StepReceive, StepPowerLevels},
		Classes:     append(append(probes.SharedClasses(), auth.LoginClasses()...), ClassPowerLevel),
		Decode:      DecodeRoomMessageSettings,
		New: func(in probetype.Inputs, s *RoomMessageSettings) (probes.Prober, error) {
			m, err := probetype.Need[*auth.Manager](in)
			if err != nil {
				return nil, err
			}
			return &RoomMessageProbe{Name: in.Name, Manager: m, Tenants: in.Tenants, Settings: s}, nil
		},
		// One event per run: the bot joins the persistent room once.
		Costs: func(_ *config.Config, _ *config.Probe, _ *RoomMessageSettings, t *config.Tenant) []config.Cost {
			return []config.Cost{{Limiter: "rc_message", Account: t.Bot.User, N: 1}}
		},
	})
}

// RoomMessageSettings configures the persistent-room message probe.
type RoomMessageSettings struct {
	// RoomID is the room of tenants that have no room_id of their own.
	RoomID string `yaml:"room_id" json:"room_id"`
	// Join lets the bot join the room when it is not in it (default true);
	// when false, "not in room" fails the run as forbidden.
	Join *bool `yaml:"join" json:"join,omitempty"`
	// MinPowerLevel, when above 0, is checked against the bot's level in
	// the room (host moderator privileges in the platform's rooms).
	MinPowerLevel int `yaml:"min_power_level" json:"min_power_level"`
	// SyncTimeout is the long-poll timeout of one /sync.
	SyncTimeout config.Duration `yaml:"sync_timeout" json:"sync_timeout"`
}

// JoinIfNeeded reports whether the bot may join the room first.
func (r *RoomMessageSettings) JoinIfNeeded() bool { return r == nil || r.Join == nil || *r.Join }

// DecodeRoomMessageSettings decodes the settings of probe p from n (nil:
// all defaults), applies the defaults and validates them against the
// tenants the probe runs for.
func DecodeRoomMessageSettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*RoomMessageSettings, error) {
	s, w, err := probetype.DecodeInto[RoomMessageSettings](cfg, p, n, "room_message")
	if err != nil {
		return nil, err
	}
	if s.SyncTimeout == 0 {
		s.SyncTimeout = config.Duration(config.DefaultSyncTimeout)
	}
	var errs config.Errors
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if s.RoomID != "" && !config.ValidRoomID(s.RoomID) {
		add("%s: room_message.room_id: %q is not a room id (!opaque:server)", w, s.RoomID)
	}
	if s.MinPowerLevel < 0 || s.MinPowerLevel > 100 {
		add("%s: room_message.min_power_level: %d is outside 0..100", w, s.MinPowerLevel)
	}
	if s.SyncTimeout < 0 {
		add("%s: room_message.sync_timeout: must be positive", w)
	}
	for _, t := range cfg.TenantsFor(p) {
		switch {
		case t.RoomID != "" && !config.ValidRoomID(t.RoomID):
			add("%s: room_id: %q is not a room id (!opaque:server)", cfg.TenantWhere(t), t.RoomID)
		case t.RoomID == "" && s.RoomID == "":
			add("%s: tenant %q has no room_id and room_message.room_id is not set", w, t.ID)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}
