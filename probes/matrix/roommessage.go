package matrix

import (
	"context"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// RoomMessageProbe is the cheap probe: the tenant bot sends a message with a
// nonce into a persistent room and sees it arrive through its own /sync. A
// bot that is not in the room (M_FORBIDDEN on send) joins first, and the
// join step says so.
type RoomMessageProbe struct {
	Name    string
	Manager *auth.Manager
	// Tenants are the tenants the probe runs for, by id.
	Tenants  map[string]*config.Tenant
	Settings *RoomMessageSettings
}

// Run implements probes.Prober.
func (p *RoomMessageProbe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeRoomMessage, tenant)
	r := &runner{rec: rec, m: p.Manager}
	s := p.Settings
	if s == nil {
		s = &RoomMessageSettings{}
	}
	t, ok := p.Tenants[tenant]
	if !ok {
		rec.AddStep(StepLogin, 0, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant))
		return rec.Finish()
	}
	room := id.RoomID(t.RoomID)
	if room == "" {
		room = id.RoomID(s.RoomID)
	}
	if room == "" {
		rec.AddStep(StepLogin, 0, probes.Errorf(probes.ClassConfig, "tenant %q has no room_id", tenant))
		return rec.Finish()
	}
	acct, err := auth.NewAccount(t, "bot", t.Bot)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return rec.Finish()
	}
	bot := &actor{acct: acct}
	if r.login(ctx, bot) != nil {
		return rec.Finish()
	}
	since, err := r.position(ctx, bot, room)
	if err != nil {
		return rec.Finish()
	}
	nonce := newNonce()
	var sent time.Time
	if err := p.send(ctx, r, bot, room, nonce, &sent, s.JoinIfNeeded()); err != nil {
		return rec.Finish()
	}
	if err := r.receive(ctx, bot, room, since, nonce, sent, s.SyncTimeout.D()); err != nil {
		return rec.Finish()
	}
	if s.MinPowerLevel > 0 {
		_ = checkPowerLevel(ctx, r, bot, room, s.MinPowerLevel)
	}
	return rec.Finish()
}

// send sends the nonce; when the homeserver says the bot is not in the room,
// the bot joins (a "join" step noting why) and sends again. The send step's
// time covers both send requests, not the join between them.
func (p *RoomMessageProbe) send(ctx context.Context, r *runner, bot *actor, room id.RoomID, nonce string, sent *time.Time, mayJoin bool) error {
	t0 := time.Now()
	r.cur = StepSend
	sendFn := func(ctx context.Context, cli *mautrix.Client) error { return sendNonce(ctx, cli, room, nonce, sent) }
	err, raw, relog := r.attempt(ctx, bot, true, sendFn)
	if err == nil || !notInRoom(raw) || !mayJoin {
		r.rec.AddStep(StepSend, time.Since(t0)-relog, err)
		if err != nil && notInRoom(raw) {
			r.rec.Note("the bot is not in the room (joining is off)")
		}
		return err
	}
	first := time.Since(t0) - relog
	tj := time.Now()
	r.cur = StepJoin
	jerr, _, jrelog := r.attempt(ctx, bot, true, func(ctx context.Context, cli *mautrix.Client) error {
		_, err := cli.JoinRoomByID(ctx, room)
		return err
	})
	r.rec.AddStep(StepJoin, time.Since(tj)-jrelog, jerr)
	r.rec.Note("the bot was not in the room (M_FORBIDDEN on send): joined first")
	if jerr != nil {
		return jerr
	}
	t1 := time.Now()
	r.cur = StepSend
	err, _, relog = r.attempt(ctx, bot, true, sendFn)
	r.rec.AddStep(StepSend, first+time.Since(t1)-relog, err)
	r.rec.Note("sent again after joining")
	return err
}
