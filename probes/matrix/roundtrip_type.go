package matrix

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeRoundtrip is the roundtrip probe type's name.
const TypeRoundtrip = "roundtrip"

// Steps of round trips besides those room_message shares (StepLogin,
// StepJoin, StepSync, StepSend, StepReceive, StepPowerLevels): the peer's
// login steps are the bot's, prefixed (peerPrefix).
const (
	StepPeerLogin   = peerPrefix + StepLogin
	StepSweep       = "sweep"
	StepCreateRoom  = "create_room"
	StepInvite      = "invite"
	StepDisplayName = "display_name"
	StepLeave       = "leave"
	StepForget      = "forget"
	peerPrefix      = "peer_"
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
	defaultCleanupTimeout = 10 * time.Second
	defaultSweepMaxAge    = 15 * time.Minute
	defaultSweepInterval  = time.Hour
)

// CrashHook is called at each point of a round trip (after each step, and
// after each half of the cleanup) with the point's name; a build for
// crash tests provides one (probetype.Provide) to kill the process at a
// chosen point. Production builds provide none.
type CrashHook func(point string)

// Journals are the process's room journals, one per directory, kept across
// configuration reloads (a service of probetype.Deps): a Journal holds its
// log open and caches the logs it read, so a Journal per reload would leave
// a file open (and on disk) for every reload. Close them at exit.
type Journals struct {
	// Logger is where the journals report damaged or untrusted journal
	// files (nil: discarded).
	Logger *slog.Logger

	mu    sync.Mutex
	byDir map[string]*Journal
}

// For returns the journal of dir, the same one for every caller.
func (js *Journals) For(dir string) *Journal {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.byDir == nil {
		js.byDir = map[string]*Journal{}
	}
	j := js.byDir[dir]
	if j == nil {
		j = &Journal{Dir: dir, Logger: js.Logger}
		js.byDir[dir] = j
	}
	return j
}

// Close closes every journal handed out (a later use opens its log again).
func (js *Journals) Close() error {
	js.mu.Lock()
	defer js.mu.Unlock()
	var errs []error
	for _, j := range js.byDir {
		errs = append(errs, j.Close())
	}
	return errors.Join(errs...)
}

// RoundtripType is the room round trip: per tenant, on a schedule derived
// from the homeserver's rate limits (the busiest account within them,
// never more often than every 10 minutes), 60 s per run. Its settings live
// under the probe's `roundtrip:` key. Probe rooms are journalled in
// data_dir/rooms (without a data_dir: DefaultJournalDir), so a restart
// finishes the cleanup of a crashed run; the stale-room sweep runs inside
// the prober (first run of each tenant after start or reload, then every
// roundtrip.sweep_interval).
func RoundtripType() probetype.Type {
	return probetype.Define(probetype.Def[RoundtripSettings]{
		Name: TypeRoundtrip, PerTenant: true, Schedule: "@every 10m", Timeout: 60 * time.Second,
		DeriveSchedule: true,
		SettingsKey:    "roundtrip",
		Steps:          RoundtripSteps(),
		Classes:        append(append(probes.SharedClasses(), auth.LoginClasses()...), ClassPowerLevel),
		Decode:         DecodeRoundtripSettings,
		New: func(in probetype.Inputs, s *RoundtripSettings) (probes.Prober, error) {
			m, err := probetype.Need[*auth.Manager](in)
			if err != nil {
				return nil, err
			}
			crash, _ := probetype.Need[CrashHook](in) // none: no crash points
			j := &Journal{Dir: s.JournalDir}
			if js, err := probetype.Need[*Journals](in); err == nil {
				j = js.For(s.JournalDir)
			}
			return &RoundtripProbe{Name: in.Name, Manager: m, Tenants: in.Tenants, Settings: s,
				Journal: j, Crash: crash}, nil
		},
		Costs: roundtripCosts,
		Accounts: func(_ *config.Config, _ *config.Probe, s *RoundtripSettings, t *config.Tenant) []*config.Account {
			if peer := s.PeerOf(t); peer != nil {
				return []*config.Account{peer}
			}
			return nil
		},
	})
}

// RoundtripSteps are the steps a round trip may record: the bot's and the
// peer's logins (whatever the login method), the sweep, the main path and
// the cleanup.
func RoundtripSteps() []string {
	out := []string{StepSweep, StepCreateRoom, StepInvite, StepJoin, StepSync, StepSend, StepReceive,
		StepPowerLevels, StepDisplayName, StepLeave, StepForget}
	for _, s := range auth.LoginSteps() {
		out = append(out, s, peerPrefix+s)
	}
	return out
}

// roundtripCosts is what one round trip for tenant t sends, as Synapse
// (element-hq/synapse v1.157.1) counts it: the bot's createRoom counts
// rc_room_creation and one rc_message (handlers/room.py), its invite
// rc_invites.per_issuer for the bot, rc_invites.per_user for the peer
// (keyed by the invitee, but the override checked is the inviter's:
// api/ratelimiting.py) and one rc_message (handlers/room_member.py), its
// message and its leave one rc_message each (handlers/message.py); the
// peer's join counts rc_joins.local and one rc_message, its leave one
// rc_message; forget creates no event. A peer several tenants share
// carries all their loads (tenants[].peer gives each its own).
func roundtripCosts(_ *config.Config, _ *config.Probe, s *RoundtripSettings, t *config.Tenant) []config.Cost {
	bot := t.Bot.User
	out := []config.Cost{
		{Limiter: "rc_message", Account: bot, N: 4},
		{Limiter: "rc_room_creation", Account: bot, N: 1},
		{Limiter: "rc_invites.per_issuer", Account: bot, N: 1},
	}
	peer := s.PeerOf(t)
	if peer == nil {
		return out
	}
	name := peerName(t, peer)
	const own = "tenants[].peer"
	return append(out,
		config.Cost{Limiter: "rc_invites.per_user", Account: name, ExemptAs: bot, N: 1, OwnAccount: own},
		config.Cost{Limiter: "rc_joins.local", Account: name, N: 1, OwnAccount: own},
		config.Cost{Limiter: "rc_message", Account: name, N: 2, OwnAccount: own},
	)
}

// peerName names a peer account for the limiters: its user, or for a
// fixed token without a user, the tenant's own peer or the probe's shared
// one.
func peerName(t *config.Tenant, peer *config.Account) string {
	switch {
	case peer.User != "":
		return peer.User
	case peer == t.Peer:
		return "peer-of-" + t.ID
	}
	return "shared-peer"
}

// RoundtripSettings configure the room round-trip probe.
type RoundtripSettings struct {
	// Peer is the shared peer account, used for tenants that have none.
	Peer *config.Account `yaml:"peer" json:"peer,omitempty"`
	// MinPowerLevel is the power level the bot must hold in its rooms.
	MinPowerLevel *int `yaml:"min_power_level" json:"min_power_level,omitempty"`
	// RoomNamePrefix starts the name of probe rooms, so leftovers are
	// recognisable by people too (the sweep goes by a state event).
	RoomNamePrefix string `yaml:"room_name_prefix" json:"room_name_prefix"`
	// SyncTimeout is the long-poll timeout of one /sync while waiting for
	// the message (capped by the run's deadline).
	SyncTimeout config.Duration `yaml:"sync_timeout" json:"sync_timeout"`
	// CleanupTimeout is the deadline of leave + forget, which run after a
	// failure or timeout too.
	CleanupTimeout config.Duration `yaml:"cleanup_timeout" json:"cleanup_timeout"`
	// SweepMaxAge: probe rooms older than this that a crash left behind are
	// left and forgotten by the sweep.
	SweepMaxAge config.Duration `yaml:"sweep_max_age" json:"sweep_max_age"`
	// SweepInterval is how often the sweep runs (at the first run of each
	// tenant, then at most this often). 0 keeps the default; a negative
	// value is an error.
	SweepInterval config.Duration `yaml:"sweep_interval" json:"sweep_interval"`
	// JournalDir is where probe rooms are journalled: global.data_dir's
	// rooms directory, else DefaultJournalDir (not a setting of its own).
	JournalDir string `yaml:"-" json:"-"`
}

// MinPower returns the configured minimum power level or the default.
func (r *RoundtripSettings) MinPower() int {
	if r == nil || r.MinPowerLevel == nil {
		return DefaultMinPowerLevel
	}
	return *r.MinPowerLevel
}

// PeerOf is the peer of tenant t's round trips: its own, else the shared
// one (nil: none).
func (r *RoundtripSettings) PeerOf(t *config.Tenant) *config.Account {
	if t.Peer != nil {
		return t.Peer
	}
	if r != nil {
		return r.Peer
	}
	return nil
}

// DecodeRoundtripSettings decodes the settings of probe p from n (nil: all
// defaults), applies the defaults and validates them against the tenants
// the probe runs for.
func DecodeRoundtripSettings(c *config.Config, p *config.Probe, n *yaml.Node) (*RoundtripSettings, error) {
	r, w, err := probetype.DecodeInto[RoundtripSettings](c, p, n, "roundtrip")
	if err != nil {
		return nil, err
	}
	if r.MinPowerLevel == nil {
		v := DefaultMinPowerLevel
		r.MinPowerLevel = &v
	}
	if r.RoomNamePrefix == "" {
		r.RoomNamePrefix = DefaultRoomNamePrefix
	}
	if r.SyncTimeout == 0 {
		r.SyncTimeout = config.Duration(config.DefaultSyncTimeout)
	}
	if r.CleanupTimeout == 0 {
		r.CleanupTimeout = config.Duration(defaultCleanupTimeout)
	}
	if r.SweepMaxAge == 0 {
		r.SweepMaxAge = config.Duration(max(defaultSweepMaxAge, 2*(p.Timeout.D()+r.CleanupTimeout.D())))
	}
	if r.SweepInterval == 0 {
		r.SweepInterval = config.Duration(defaultSweepInterval)
	}
	if r.Peer != nil && r.Peer.Method == "" {
		r.Peer.Method = config.MethodPassword
	}
	r.JournalDir = DefaultJournalDir()
	if c.Global.DataDir != "" {
		r.JournalDir = filepath.Join(c.Global.DataDir, "rooms")
	}

	var errs config.Errors
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if r.Peer != nil {
		errs = append(errs, c.ValidateAccount(w+": roundtrip.peer", r.Peer)...)
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
			w, r.SweepMaxAge, p.Timeout+r.CleanupTimeout)
	} else if r.SweepMaxAge < 0 {
		add("%s: roundtrip.sweep_max_age: must be positive", w)
	}
	for _, t := range c.TenantsFor(p) {
		peer := r.PeerOf(t)
		if peer == nil {
			add("%s: roundtrip.peer: missing, and tenant %q has no peer of its own (the round trip invites a second account)", w, t.ID)
			continue
		}
		if peer.User != "" && peer.User == t.Bot.User && peer.Method != config.MethodToken {
			add("%s: tenant %q: the peer must be another account than the bot (%q)", w, t.ID, peer.User)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}
