package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Probe-room markers: a creation content field and a state event, so rooms a
// crash left behind are recognisable (the name prefix is for people).
const (
	// MarkerEventType is the state event (state key "") every probe room has.
	MarkerEventType = "org.mxprobe.probe_room"
	// CreationMarker is the creation_content field of probe rooms: the
	// marker's CreatedMS (true in rooms of earlier versions).
	CreationMarker = "org.mxprobe.probe_room"
)

// ClassPowerLevel: the bot holds less than the configured power level.
const ClassPowerLevel probes.Class = "insufficient_power"

// Marker is the content of the marker state event.
type Marker struct {
	Probe     string `json:"probe"`
	Tenant    string `json:"tenant"`
	CreatedMS int64  `json:"created_ms"`
}

var markerType = event.Type{Type: MarkerEventType, Class: event.StateEventType}

// RoundtripProbe is the room round trip: the tenant bot creates a private,
// marked probe room, invites the peer, the peer joins, the bot sends a
// message with a nonce and the peer sees it through /sync; then the bot's
// power level (and, when configured, its display name) is checked, and both
// leave and forget the room. Cleanup always runs, with its own deadline; a
// sweep removes probe rooms a crash left behind.
type RoundtripProbe struct {
	Name    string
	Manager *auth.Manager
	// Tenants are the tenants the probe runs for, by id.
	Tenants  map[string]*config.Tenant
	Settings *RoundtripSettings

	// Journal records probe rooms before they are created, so a crashed
	// run's rooms are cleaned up by the next sweep (nil: no journal).
	Journal *Journal
	// Crash, when set, is called at each point of a run (after each step,
	// and after each half of the cleanup) with the point's name; tests use
	// it to kill the process at a chosen point.
	Crash func(point string)

	mu    sync.Mutex
	swept map[string]time.Time // tenant → last successful sweep
	// sweptAccounts: account key → its last successful sweep, so a peer
	// shared by every tenant is swept once per sweep_interval, not once
	// per tenant (at a start, 25,000 tenants each read the marker of every
	// room the shared peer was in).
	sweptAccounts map[string]time.Time
	// abandoned are the rooms of finished runs whose cleanup could not be
	// done (createRoom's answer lost, a leave refused), by tenant: the
	// tenant's next run sweeps them first instead of waiting for
	// sweep_max_age, since no run of this process still uses them.
	abandoned map[string][]abandonedRoom

	// Test hooks: afterStep is called after each main step; crash skips
	// cleanup (a process that died mid-run).
	afterStep func(step string)
	crash     bool
}

func (p *RoundtripProbe) settings() *RoundtripSettings {
	if p.Settings != nil {
		return p.Settings
	}
	return &RoundtripSettings{}
}

// actors resolves the bot and the peer of a tenant.
func (p *RoundtripProbe) actors(tenant string) (bot, peer *actor, err error) {
	t, ok := p.Tenants[tenant]
	if !ok {
		return nil, nil, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant)
	}
	ba, err := auth.NewAccount(t, "bot", t.Bot)
	if err != nil {
		return nil, nil, err
	}
	bot = &actor{acct: ba}
	peerCfg, shared := t.Peer, false
	if peerCfg == nil && p.Settings != nil && p.Settings.Peer != nil {
		peerCfg, shared = p.Settings.Peer, true
	}
	if peerCfg == nil {
		return bot, nil, probes.Errorf(probes.ClassConfig, "no peer account for tenant %q (roundtrip.peer or the tenant's peer)", tenant)
	}
	pa, err := auth.NewAccount(t, "peer", *peerCfg)
	if err != nil {
		return bot, nil, err
	}
	if shared {
		// One session (and one device) of the shared peer per homeserver,
		// not one per tenant.
		pa.Key = "shared-peer@" + strings.TrimRight(pa.HomeserverURL, "/")
	}
	return bot, &actor{acct: pa, prefix: peerPrefix}, nil
}

// Run implements probes.Prober.
func (p *RoundtripProbe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeRoundtrip, tenant)
	r := &runner{rec: rec, m: p.Manager}
	s := p.settings()
	bot, peer, err := p.actors(tenant)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return rec.Finish()
	}
	if r.login(ctx, bot) != nil || r.login(ctx, peer) != nil {
		return rec.Finish()
	}
	if p.sweepDue(tenant) {
		p.sweepStep(ctx, r, tenant, bot, peer, false)
	}

	st := &rtState{created: time.Now()}
	st.entry = &JournalEntry{Tenant: tenant, Probe: p.Name, Homeserver: bot.acct.HomeserverURL, CreatedMS: st.created.UnixMilli()}
	if err := p.Journal.Add(st.entry); err != nil {
		st.entry = nil
		rec.Note("room journal not written: " + err.Error())
	}
	p.point("journal")
	p.steps(ctx, r, tenant, bot, peer, st)
	// Cleanup runs after failures, timeouts and cancellations too, with a
	// deadline of its own.
	if st.room != "" && !p.crash {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.CleanupTimeout.D())
		st.cleaned = p.cleanup(cctx, r, st.room, bot, peer, st.invited, st.joined)
		if st.cleaned && st.entry != nil {
			_ = p.Journal.Remove(st.entry)
		}
		cancel()
		if !st.cleaned {
			p.abandon(tenant, abandonedRoom{room: st.room, createdMS: st.created.UnixMilli(), entry: st.entry})
		}
	} else if st.room == "" && st.entry != nil && st.createRefused {
		_ = p.Journal.Remove(st.entry) // no room was made
	} else if st.room == "" && st.createTried && !st.createRefused && !p.crash {
		// createRoom may have made a room whose answer never came back.
		p.abandon(tenant, abandonedRoom{createdMS: st.created.UnixMilli(), entry: st.entry})
	}
	return rec.Finish()
}

// abandonedRoom is a room a finished run could not clean up: known by its
// id, or only by its creation marker when createRoom's answer was lost.
type abandonedRoom struct {
	room      id.RoomID
	createdMS int64
	entry     *JournalEntry // nil without a journal
}

func (p *RoundtripProbe) abandon(tenant string, a abandonedRoom) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.abandoned == nil {
		p.abandoned = map[string][]abandonedRoom{}
	}
	p.abandoned[tenant] = append(p.abandoned[tenant], a)
}

// takeAbandoned hands the tenant's abandoned rooms to its sweep.
func (p *RoundtripProbe) takeAbandoned(tenant string) []abandonedRoom {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.abandoned[tenant]
	delete(p.abandoned, tenant)
	return out
}

// point calls the Crash hook.
func (p *RoundtripProbe) point(name string) {
	if p.Crash != nil {
		p.Crash(name)
	}
}

// rtState is how far a round trip got, for its cleanup.
type rtState struct {
	room    id.RoomID
	invited bool
	joined  bool
	created time.Time
	entry   *JournalEntry
	// createRefused: createRoom got a 4xx answer (no room exists).
	createRefused bool
	// createTried: createRoom was sent; cleaned: the cleanup succeeded.
	createTried bool
	cleaned     bool
}

// steps runs the main path of the round trip, stopping at the first failure.
func (p *RoundtripProbe) steps(ctx context.Context, r *runner, tenant string, bot, peer *actor, st *rtState) {
	s := p.settings()
	hook := func(name string) {
		if p.afterStep != nil {
			p.afterStep(name)
		}
		p.point(name)
	}
	nonce := newNonce()
	created := st.created
	createRefused := false
	err := r.step(ctx, StepCreateRoom, bot, func(ctx context.Context, cli *mautrix.Client) error {
		var resp struct {
			RoomID id.RoomID `json:"room_id"`
		}
		st.createTried = true
		_, err := cli.MakeRequest(ctx, http.MethodPost, cli.BuildClientURL("v3", "createRoom"), p.createRequest(tenant, created), &resp)
		if err == nil && resp.RoomID == "" {
			return probes.Errorf(probes.ClassBadResponse, "createRoom answered without a room_id")
		}
		st.room = resp.RoomID
		if st := mxclient.HTTPStatus(err); st >= 400 && st < 500 {
			createRefused = true
		}
		return err
	})
	st.createRefused = createRefused
	if st.room != "" && st.entry != nil {
		st.entry.RoomID = string(st.room)
		if jerr := p.Journal.Update(st.entry); jerr != nil {
			r.rec.Note("room journal not updated: " + jerr.Error())
		}
	}
	hook(StepCreateRoom)
	if err != nil {
		return
	}

	err = r.step(ctx, StepInvite, bot, func(ctx context.Context, cli *mautrix.Client) error {
		st.invited = true
		_, err := cli.InviteUser(ctx, st.room, &mautrix.ReqInviteUser{UserID: peer.userID()})
		if err != nil && mxclient.HTTPStatus(err) >= 400 && mxclient.HTTPStatus(err) < 500 {
			st.invited = false // refused: nothing to clean up on the peer's side
		}
		return err
	})
	hook(StepInvite)
	if err != nil {
		return
	}

	err = r.step(ctx, StepJoin, peer, func(ctx context.Context, cli *mautrix.Client) error {
		st.joined = true
		_, err := cli.JoinRoomByID(ctx, st.room)
		return err
	})
	hook(StepJoin)
	if err != nil {
		return
	}

	since, err := r.position(ctx, peer, st.room)
	hook(StepSync)
	if err != nil {
		return
	}

	var sent time.Time
	err = r.step(ctx, StepSend, bot, func(ctx context.Context, cli *mautrix.Client) error {
		return sendNonce(ctx, cli, st.room, nonce, &sent)
	})
	hook(StepSend)
	if err != nil {
		return
	}

	err = r.receive(ctx, peer, st.room, since, nonce, sent, s.SyncTimeout.D())
	hook(StepReceive)
	if err != nil {
		return
	}

	err = checkPowerLevel(ctx, r, bot, st.room, s.MinPower())
	hook(StepPowerLevels)
	if err != nil {
		return
	}

	if want := bot.acct.Config.DisplayName; want != "" {
		_ = checkDisplayName(ctx, r, bot, want)
		hook(StepDisplayName)
	}
}

func (p *RoundtripProbe) createRequest(tenant string, created time.Time) map[string]any {
	ms := created.UnixMilli()
	return map[string]any{
		"preset":     "private_chat",
		"visibility": "private",
		"name":       fmt.Sprintf("%s%s %d", p.settings().RoomNamePrefix, tenant, ms),
		"topic":      "mxprobe round-trip probe room; safe to leave and forget",
		// The marker's time in the create event too: a createRoom cut
		// short (a homeserver stopped mid-request) can leave a room with
		// its create event and the bot's join but no marker state, and
		// the sweep still recognises it.
		"creation_content": map[string]any{
			CreationMarker: ms,
		},
		"initial_state": []map[string]any{{
			"type": MarkerEventType, "state_key": "",
			"content": Marker{Probe: p.Name, Tenant: tenant, CreatedMS: ms},
		}},
	}
}

// checkPowerLevel is the step that checks the bot's power level in room.
func checkPowerLevel(ctx context.Context, r *runner, bot *actor, room id.RoomID, minLevel int) error {
	level := 0
	err := r.step(ctx, StepPowerLevels, bot, func(ctx context.Context, cli *mautrix.Client) error {
		var pl event.PowerLevelsEventContent
		if err := cli.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
			return err
		}
		level = pl.GetUserLevel(bot.userID())
		if level < minLevel {
			return probes.Errorf(ClassPowerLevel, "the bot holds power level %d, below the required %d", level, minLevel)
		}
		return nil
	})
	if err == nil {
		if level > 100 {
			r.rec.Note(fmt.Sprintf("room creator (≥ %d required)", minLevel))
		} else {
			r.rec.Note(fmt.Sprintf("level %d (≥ %d required)", level, minLevel))
		}
	}
	return err
}

// checkDisplayName is the step that compares the bot's display name with
// the configured one.
func checkDisplayName(ctx context.Context, r *runner, bot *actor, want string) error {
	return r.step(ctx, StepDisplayName, bot, func(ctx context.Context, cli *mautrix.Client) error {
		resp, err := cli.GetDisplayName(ctx, bot.userID())
		if err != nil {
			return err
		}
		if resp.DisplayName != want {
			return probes.Errorf(probes.ClassIdentityMismatch, "display name is %q, expected %q",
				mxclient.Short(resp.DisplayName), want)
		}
		return nil
	})
}

// cleanup leaves and forgets room for both accounts (soft steps: counted,
// and a failure does not fail an otherwise good run). It reports whether
// both accounts are out of the room and forgot it. Each account may log in
// again once during the cleanup when its token was cancelled.
func (p *RoundtripProbe) cleanup(ctx context.Context, r *runner, room id.RoomID, bot, peer *actor, invited, joined bool) bool {
	bot.allowOneRecovery()
	peer.allowOneRecovery()
	peerIn := invited || joined
	peerLeft := false
	done := true
	_ = r.rec.SoftStep(StepLeave, func() error {
		r.cur = StepLeave
		var errs []error
		if peerIn {
			err, raw, _ := r.attempt(ctx, peer, false, func(ctx context.Context, cli *mautrix.Client) error {
				_, err := cli.LeaveRoom(ctx, room)
				return err
			})
			switch {
			case err == nil:
				peerLeft = true
			case !joined && gone(raw):
				// The invite never landed: nothing to leave.
			default:
				done = false
				r.rec.Count(probes.CountCleanupFailure, 1)
				errs = append(errs, fmt.Errorf("peer: %w", err))
			}
			p.point("peer_leave")
		}
		err, _, _ := r.attempt(ctx, bot, false, func(ctx context.Context, cli *mautrix.Client) error {
			_, err := cli.LeaveRoom(ctx, room)
			return err
		})
		if err != nil {
			done = false
			r.rec.Count(probes.CountCleanupFailure, 1)
			errs = append(errs, fmt.Errorf("bot: %w", err))
			// Still try to forget; it fails if the leave did not happen.
		}
		p.point("bot_leave")
		return joinErrs(errs)
	})
	_ = r.rec.SoftStep(StepForget, func() error {
		r.cur = StepForget
		var errs []error
		if peerLeft {
			if err, _, _ := r.attempt(ctx, peer, false, forget(room)); err != nil {
				done = false
				r.rec.Count(probes.CountCleanupFailure, 1)
				errs = append(errs, fmt.Errorf("peer: %w", err))
			}
			p.point("peer_forget")
		}
		if err, _, _ := r.attempt(ctx, bot, false, forget(room)); err != nil {
			done = false
			r.rec.Count(probes.CountCleanupFailure, 1)
			errs = append(errs, fmt.Errorf("bot: %w", err))
		}
		p.point("bot_forget")
		return joinErrs(errs)
	})
	return done
}

func forget(room id.RoomID) func(ctx context.Context, cli *mautrix.Client) error {
	return func(ctx context.Context, cli *mautrix.Client) error {
		_, err := cli.ForgetRoom(ctx, room)
		return err
	}
}

// joinErrs joins errors keeping the class of the first.
func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return probes.WithClass(probes.Classify(errs[0]), errors.Join(errs...))
}
