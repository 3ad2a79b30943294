package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/probes"
)

// sweepDue reports whether the tenant's sweep should run now: at its first
// run after start (or reload) and then every sweep_interval.
func (p *RoundtripProbe) sweepDue(tenant string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, ok := p.swept[tenant]
	return !ok || len(p.abandoned[tenant]) > 0 || time.Since(last) >= p.settings().SweepInterval.D()
}

func (p *RoundtripProbe) markSwept(tenant string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.swept == nil {
		p.swept = map[string]time.Time{}
	}
	p.swept[tenant] = time.Now()
}

// accountSwept reports whether the account was swept within sweep_interval.
func (p *RoundtripProbe) accountSwept(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	last, ok := p.sweptAccounts[key]
	return ok && time.Since(last) < p.settings().SweepInterval.D()
}

func (p *RoundtripProbe) markAccountSwept(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sweptAccounts == nil {
		p.sweptAccounts = map[string]time.Time{}
	}
	p.sweptAccounts[key] = time.Now()
}

// Sweep logs the tenant's bot and peer in and leaves and forgets the probe
// rooms older than sweep_max_age that they are still in or invited to.
func (p *RoundtripProbe) Sweep(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeRoundtrip, tenant)
	r := &runner{rec: rec, m: p.Manager}
	bot, peer, err := p.actors(tenant)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return rec.Finish()
	}
	if r.login(ctx, bot) != nil || r.login(ctx, peer) != nil {
		return rec.Finish()
	}
	p.sweepStep(ctx, r, tenant, bot, peer, true)
	return rec.Finish()
}

// sweepStep is the soft step "sweep", bounded by cleanup_timeout. Unless
// all is set (Sweep, on demand), an account swept within sweep_interval
// for another tenant (a shared peer) is not listed again.
func (p *RoundtripProbe) sweepStep(ctx context.Context, r *runner, tenant string, bot, peer *actor, all bool) {
	s := p.settings()
	sctx, cancel := context.WithTimeout(ctx, max(s.CleanupTimeout.D(), time.Second))
	defer cancel()
	cutoff := time.Now().Add(-s.SweepMaxAge.D())
	left := 0
	r.cur = StepSweep
	err := r.rec.SoftStep(StepSweep, func() error {
		var errs []error
		// First the rooms the journal holds for crashed runs, left but not
		// forgotten ones included; rooms whose id a crash kept from the
		// journal are found by their marker below.
		orphans, err := p.Journal.Orphans(tenant, s.SweepMaxAge.D())
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the room journal: %w", err))
		}
		wanted := map[int64]bool{}
		var unnamed []*JournalEntry
		// Then the rooms this process's own finished runs could not clean
		// up (their journal entries are not orphans while it lives).
		abandoned := p.takeAbandoned(tenant)
		var retry []abandonedRoom
		taken := map[string]bool{} // journal entries handled here
		for _, a := range abandoned {
			if a.entry != nil {
				taken[a.entry.ref()] = true
			}
			if a.room == "" {
				wanted[a.createdMS] = true
				if a.entry != nil {
					unnamed = append(unnamed, a.entry)
				}
				continue
			}
			if err := p.finishRoom(sctx, r, a.room, bot, peer); err != nil {
				r.rec.Count(probes.CountCleanupFailure, 1)
				errs = append(errs, err)
				retry = append(retry, a)
				continue
			}
			if a.entry != nil {
				_ = p.Journal.Remove(a.entry)
			}
			left++
		}
		for _, e := range orphans {
			if taken[e.ref()] {
				continue
			}
			if e.RoomID == "" {
				wanted[e.CreatedMS] = true
				unnamed = append(unnamed, e)
				continue
			}
			if err := p.finishRoom(sctx, r, id.RoomID(e.RoomID), bot, peer); err != nil {
				r.rec.Count(probes.CountCleanupFailure, 1)
				errs = append(errs, err)
				continue
			}
			_ = p.Journal.Remove(e)
			left++
		}
		actorsOK := true
		for _, a := range []*actor{peer, bot} {
			// Only the peer is ever invited to probe rooms. The bot's
			// invitations are not listed: the bot may be an application
			// service's sender, to which Synapse refuses /sync (a 500:
			// handlers/sync.py generate_sync_result, "We no longer
			// support AS users using /sync directly").
			// Swept as a peer or as a bot: a peer's sweep lists its
			// invitations too, a bot's does not.
			sweptAs := a.acct.Key + "\x00" + strconv.FormatBool(a == peer)
			if !all && len(wanted) == 0 && p.accountSwept(sweptAs) {
				// Swept for another tenant (a shared peer) lately: its
				// stale rooms, whoever made them, are gone.
				continue
			}
			n, err := p.sweepActor(sctx, r, a, cutoff, wanted, a == peer)
			left += n
			if err != nil {
				actorsOK = false
				errs = append(errs, err)
				continue
			}
			p.markAccountSwept(sweptAs)
		}
		if actorsOK {
			for _, e := range unnamed {
				_ = p.Journal.Remove(e)
			}
		} else {
			for _, a := range abandoned {
				if a.room == "" {
					retry = append(retry, a)
				}
			}
		}
		for _, a := range retry {
			p.abandon(tenant, a)
		}
		return joinErrs(errs)
	})
	if left > 0 {
		r.rec.Note(fmt.Sprintf("left and forgot %d stale probe rooms", left))
	}
	if err == nil {
		p.markSwept(tenant)
	}
}

// sweepActor leaves and forgets the stale probe rooms of one account: the
// joined ones (recognised by the marker state event) and, for invitations
// (which carry no state to read), those whose name has the probe prefix.
func (p *RoundtripProbe) sweepActor(ctx context.Context, r *runner, a *actor, cutoff time.Time, wanted map[int64]bool, listInvites bool) (int, error) {
	var rooms []id.RoomID
	err, _, _ := r.attempt(ctx, a, false, func(ctx context.Context, cli *mautrix.Client) error {
		resp, err := cli.JoinedRooms(ctx)
		if err == nil {
			rooms = resp.JoinedRooms
		}
		return err
	})
	if err != nil {
		r.rec.Count(probes.CountCleanupFailure, 1)
		return 0, fmt.Errorf("%sjoined_rooms: %w", a.prefix, err)
	}
	stale := map[id.RoomID]bool{}
	for _, room := range rooms {
		var m Marker
		err, raw, _ := r.attempt(ctx, a, false, func(ctx context.Context, cli *mautrix.Client) error {
			return cli.StateEvent(ctx, room, markerType, "", &m)
		})
		switch {
		case err == nil:
			if m.CreatedMS > 0 && (time.UnixMilli(m.CreatedMS).Before(cutoff) || wanted[m.CreatedMS]) {
				stale[room] = true
			}
		case gone(raw):
			// No marker state: not a probe room, or one whose createRoom
			// was cut short before its initial state; the create event
			// tells them apart.
			if ms := p.createdByMarker(ctx, r, a, room); ms > 0 && (time.UnixMilli(ms).Before(cutoff) || wanted[ms]) {
				stale[room] = true
			}
		default:
			r.rec.Count(probes.CountCleanupFailure, 1)
			return 0, fmt.Errorf("%sreading the probe marker: %w", a.prefix, err)
		}
	}
	if listInvites {
		invites, err := p.staleInvites(ctx, r, a, cutoff, wanted)
		if err != nil {
			r.rec.Count(probes.CountCleanupFailure, 1)
			return 0, err
		}
		for _, room := range invites {
			stale[room] = true
		}
	}
	n := 0
	var errs []error
	for room := range stale {
		err, _, _ := r.attempt(ctx, a, false, func(ctx context.Context, cli *mautrix.Client) error {
			if _, err := cli.LeaveRoom(ctx, room); err != nil {
				return err
			}
			_, err := cli.ForgetRoom(ctx, room)
			return err
		})
		if err != nil {
			r.rec.Count(probes.CountCleanupFailure, 1)
			errs = append(errs, fmt.Errorf("%sleaving a stale probe room: %w", a.prefix, err))
			continue
		}
		n++
	}
	return n, joinErrs(errs)
}

// staleInvites lists the pending invitations of a to probe rooms created
// before cutoff, from one /sync that shows only invitations' stripped state.
func (p *RoundtripProbe) staleInvites(ctx context.Context, r *runner, a *actor, cutoff time.Time, wanted map[int64]bool) ([]id.RoomID, error) {
	none := map[string]any{"not_types": []string{"*"}}
	filter, _ := json.Marshal(map[string]any{
		"presence": none, "account_data": none,
		"room": map[string]any{
			"timeline": map[string]any{"limit": 0}, "state": none,
			"ephemeral": none, "account_data": none,
		},
	})
	var resp *mautrix.RespSync
	err, _, _ := r.attempt(ctx, a, false, func(ctx context.Context, cli *mautrix.Client) error {
		var err error
		// Fresh: a cached answer (freshFilter) could be from the first
		// run's sweep, before today's stale invitations existed.
		resp, err = cli.SyncRequest(ctx, 0, "", freshFilter(string(filter)), false, event.PresenceOffline)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%slisting invitations: %w", a.prefix, err)
	}
	prefix := p.settings().RoomNamePrefix
	var out []id.RoomID
	for room, inv := range resp.Rooms.Invite {
		for _, evt := range inv.State.Events {
			if evt == nil || evt.Type.Type != event.StateRoomName.Type {
				continue
			}
			name, _ := evt.Content.Raw["name"].(string)
			if created, ok := probeRoomCreated(name, prefix); ok && (created.Before(cutoff) || wanted[created.UnixMilli()]) {
				out = append(out, room)
			}
		}
	}
	return out, nil
}

// probeRoomCreated parses "<prefix><tenant> <unix ms>", the name of probe rooms.
func probeRoomCreated(name, prefix string) (time.Time, bool) {
	if prefix == "" || !strings.HasPrefix(name, prefix) {
		return time.Time{}, false
	}
	i := strings.LastIndexByte(name, ' ')
	if i < 0 {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(name[i+1:], 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// finishRoom finishes the cleanup of a journalled room: the peer, then the
// bot, leave it (already gone is fine) and forget it.
func (p *RoundtripProbe) finishRoom(ctx context.Context, r *runner, room id.RoomID, bot, peer *actor) error {
	for _, a := range []*actor{peer, bot} {
		err, raw, _ := r.attempt(ctx, a, false, func(ctx context.Context, cli *mautrix.Client) error {
			_, err := cli.LeaveRoom(ctx, room)
			return err
		})
		if err != nil && !gone(raw) {
			return fmt.Errorf("%sleaving journalled room %s: %w", a.prefix, room, err)
		}
		err, raw, _ = r.attempt(ctx, a, false, forget(room))
		if err != nil && !gone(raw) {
			return fmt.Errorf("%sforgetting journalled room %s: %w", a.prefix, room, err)
		}
	}
	return nil
}

// createdByMarker returns the CreatedMS a probe room's create event carries
// in its creation_content (0: not a probe room, or one of an earlier
// version whose marker holds no time, or unreadable).
func (p *RoundtripProbe) createdByMarker(ctx context.Context, r *runner, a *actor, room id.RoomID) int64 {
	var content map[string]any
	err, _, _ := r.attempt(ctx, a, false, func(ctx context.Context, cli *mautrix.Client) error {
		return cli.StateEvent(ctx, room, event.StateCreate, "", &content)
	})
	if err != nil {
		return 0
	}
	if v, ok := content[CreationMarker].(float64); ok && v > 0 {
		return int64(v)
	}
	return 0
}
