package federation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeDelivery is the federation delivery probe type's name.
const TypeDelivery = "federation_roundtrip"

// Steps of a federation round trip (the bot's login steps come first,
// named by its login method).
const (
	StepLogin      = "login"
	StepPeerLogin  = "peer_login"
	StepCreateRoom = "create_room"
	StepPeerJoin   = "peer_join"
	StepPeerSync   = "peer_sync"
	StepSend       = "send"
	StepReceive    = "receive"
	StepCleanup    = "cleanup"
)

// DeliveryType is the federation_roundtrip probe type: per tenant, the
// tenant's bot creates a private room on our homeserver inviting a peer
// account on a remote homeserver; the peer joins over federation, the bot
// sends a nonce and the peer's /sync must carry it (delivery latency, as
// message_delivery_seconds); both leave and forget the room. Every 10
// minutes by default.
func DeliveryType() probetype.Type {
	return probetype.Define(probetype.Def[DeliverySettings]{
		Name: TypeDelivery, PerTenant: true, Schedule: "@every 10m", Timeout: 60 * time.Second,
		SettingsKey: TypeDelivery,
		Steps:       []string{StepLogin, StepPeerLogin, StepCreateRoom, StepPeerJoin, StepPeerSync, StepSend, StepReceive, StepCleanup},
		Classes:     append(probes.SharedClasses(), auth.LoginClasses()...),
		Decode:      DecodeDeliverySettings,
		New: func(in probetype.Inputs, s *DeliverySettings) (probes.Prober, error) {
			m, err := probetype.Need[*auth.Manager](in)
			if err != nil {
				return nil, err
			}
			return &DeliveryProbe{Name: in.Name, Manager: m, Tenants: in.Tenants, Settings: s}, nil
		},
		// A room, an invite and a message per run from the bot.
		Costs: func(_ *config.Config, _ *config.Probe, _ *DeliverySettings, t *config.Tenant) []config.Cost {
			return []config.Cost{
				{Limiter: "rc_room_creation", Account: t.Bot.User, N: 1},
				{Limiter: "rc_invites.per_issuer", Account: t.Bot.User, N: 1},
				{Limiter: "rc_message", Account: t.Bot.User, N: 1},
			}
		},
	})
}

// DeliverySettings configure a federation round trip.
type DeliverySettings struct {
	// Peer is the account on the remote homeserver.
	Peer RemotePeer `yaml:"peer"`
	// SyncTimeout is the long-poll timeout of the peer's /sync.
	SyncTimeout config.Duration `yaml:"sync_timeout"`
}

// RemotePeer is an account on another homeserver (password login).
type RemotePeer struct {
	HomeserverURL string `yaml:"homeserver_url"`
	ServerName    string `yaml:"server_name"`
	// User is the peer's localpart.
	User         string         `yaml:"user"`
	Password     promcfg.Secret `yaml:"password"`
	PasswordFile string         `yaml:"password_file"`
}

// DecodeDeliverySettings decodes and checks the settings of probe p.
func DecodeDeliverySettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*DeliverySettings, error) {
	w := cfg.ProbeWhere(p)
	if n == nil {
		return nil, fmt.Errorf("%s: %s.peer: missing (the account on the remote homeserver)", w, TypeDelivery)
	}
	where := func(line int) string { return fmt.Sprintf("%s:%d: probe %q", cfg.File, line, p.Name) }
	if n.Line > 0 {
		w = where(n.Line)
	}
	s := &DeliverySettings{}
	if err := probetype.DecodeStrict(n, TypeDelivery, s, where); err != nil {
		return nil, err
	}
	if s.SyncTimeout == 0 {
		s.SyncTimeout = config.Duration(config.DefaultSyncTimeout)
	}
	var errs config.Errors
	add := func(format string, args ...any) {
		errs = append(errs, w+": "+TypeDelivery+"."+fmt.Sprintf(format, args...))
	}
	pr := s.Peer
	if err := config.CheckURL(pr.HomeserverURL); pr.HomeserverURL == "" || err != nil {
		add("peer.homeserver_url: missing or not a URL")
	}
	if pr.ServerName == "" {
		add("peer.server_name: missing")
	}
	if pr.User == "" || strings.ContainsAny(pr.User, "@:") {
		add("peer.user: the peer's localpart")
	}
	if (pr.Password == "") == (pr.PasswordFile == "") {
		add("peer: one of password and password_file")
	}
	if s.SyncTimeout < 0 {
		add("sync_timeout: must be positive")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// DeliveryProbe is a configured federation round trip.
type DeliveryProbe struct {
	Name     string
	Manager  *auth.Manager
	Tenants  map[string]*config.Tenant
	Settings *DeliverySettings
}

// cleanupTimeout bounds leaving and forgetting after the run's own steps
// (with a deadline of its own, so a run that timed out still cleans up).
const cleanupTimeout = 15 * time.Second

// Run implements probes.Prober.
func (p *DeliveryProbe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeDelivery, tenant)
	t, ok := p.Tenants[tenant]
	if !ok {
		rec.AddStep(StepLogin, 0, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant))
		return rec.Finish()
	}
	botAcct, err := auth.NewAccount(t, "bot", t.Bot)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return rec.Finish()
	}
	peerAcct, err := p.peerAccount(tenant)
	if err != nil {
		rec.AddStep(StepPeerLogin, 0, err)
		return rec.Finish()
	}
	bot, err := p.session(ctx, rec, botAcct, "")
	if err != nil {
		return rec.Finish()
	}
	peer, err := p.session(ctx, rec, peerAcct, StepPeerLogin)
	if err != nil {
		return rec.Finish()
	}
	if room := p.roundTrip(ctx, rec, botAcct, bot, peer); room != "" {
		p.cleanup(rec, bot, peer, room)
	}
	res := rec.Finish()
	// The remote homeserver dropped the peer's token (a restart that lost
	// its sessions): the next run logs the peer in afresh.
	if res.Class == probes.ClassAuthFailed && (strings.HasPrefix(res.FailedStep, "peer_") || res.FailedStep == StepReceive) {
		p.Manager.Forget(peerAcct.Key)
	}
	return res
}

// roundTrip runs the steps from the room's creation to the peer's receipt
// and returns the room ("" when none was created).
func (p *DeliveryProbe) roundTrip(ctx context.Context, rec *probes.Recorder, botAcct auth.Account, bot, peer *mautrix.Client) id.RoomID {
	var room id.RoomID
	if rec.Step(StepCreateRoom, func() error {
		resp, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat", Invite: []id.UserID{peer.UserID},
			Name: "mxprobe federation round trip", Topic: "mxprobe probe room: left and forgotten after the run",
		})
		if err != nil {
			return mxclient.Classify(err)
		}
		room = resp.RoomID
		return nil
	}) != nil {
		return ""
	}
	if rec.Step(StepPeerJoin, func() error {
		_, err := peer.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{botAcct.ServerName}})
		return mxclient.Classify(err)
	}) != nil {
		return room
	}
	var since string
	if rec.Step(StepPeerSync, func() error {
		resp, err := peer.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
		if err != nil {
			return mxclient.Classify(err)
		}
		since = resp.NextBatch
		return nil
	}) != nil {
		return room
	}
	nonce := newNonce()
	var sent time.Time
	if rec.Step(StepSend, func() error {
		sent = time.Now()
		_, err := bot.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "mxprobe federation probe " + nonce})
		return mxclient.Classify(err)
	}) != nil {
		return room
	}
	_ = rec.Step(StepReceive, func() error {
		for {
			resp, err := peer.SyncRequest(ctx, int(p.Settings.SyncTimeout.D().Milliseconds()), since, "", false, event.PresenceOffline)
			if err != nil {
				return mxclient.Classify(err)
			}
			since = resp.NextBatch
			if jr, ok := resp.Rooms.Join[room]; ok {
				for _, ev := range jr.Timeline.Events {
					if body, _ := ev.Content.Raw["body"].(string); strings.HasSuffix(body, nonce) {
						d := time.Since(sent)
						rec.Signal(probes.SignalDeliverySeconds, d.Seconds())
						rec.Note(fmt.Sprintf("delivered to %s in %s", peer.UserID, d.Round(time.Millisecond)))
						return nil
					}
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	})
	return room
}

// peerAccount is the remote peer as the login manager knows accounts (its
// session is cached per tenant, like a round trip's peer).
func (p *DeliveryProbe) peerAccount(tenant string) (auth.Account, error) {
	pr := p.Settings.Peer
	a := auth.Account{
		Key: tenant + "/federation_peer/" + p.Name, Tenant: tenant, Role: "federation_peer",
		HomeserverURL: pr.HomeserverURL, ServerName: pr.ServerName,
		Config: config.Account{Method: config.MethodPassword, User: pr.User},
	}
	pw, err := config.Secret(pr.Password, pr.PasswordFile)
	if err != nil {
		return a, probes.Errorf(probes.ClassConfig, "federation peer password: %v", err)
	}
	a.Password = promcfg.Secret(pw)
	return a, nil
}

// session logs acct in (or reuses its session); with a step name, the
// login's own steps collapse into that one step.
func (p *DeliveryProbe) session(ctx context.Context, rec *probes.Recorder, acct auth.Account, step string) (*mautrix.Client, error) {
	var sess *auth.Session
	var err error
	rec.Scrub(acct.Secrets()...)
	if step == "" {
		sess, err = p.Manager.Session(ctx, acct, rec)
	} else {
		t0 := time.Now()
		sub := probes.NewRecorder("", "", "")
		sess, err = p.Manager.Session(ctx, acct, sub)
		if err == nil {
			r := sub.Finish()
			if !r.OK() {
				err = probes.Errorf(r.Class, "%s", r.Error)
			}
		}
		rec.AddStep(step, time.Since(t0), err)
	}
	if err != nil {
		return nil, err
	}
	rec.Scrub(sess.AccessToken)
	cli, err := p.Manager.Client(sess)
	if err != nil {
		rec.AddStep(StepLogin, 0, probes.WithClass(probes.ClassInternal, err))
		return nil, err
	}
	return cli, nil
}

// cleanup makes both accounts leave and forget the room, with a deadline
// of its own; a failure is counted (mxprobe_cleanup_failures_total) but
// does not fail the run.
func (p *DeliveryProbe) cleanup(rec *probes.Recorder, bot, peer *mautrix.Client, room id.RoomID) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	_ = rec.SoftStep(StepCleanup, func() error {
		for _, c := range []*mautrix.Client{peer, bot} {
			if _, err := c.LeaveRoom(ctx, room); err != nil && !mxclient.Is(err, mautrix.MForbidden) {
				errs = append(errs, fmt.Errorf("%s leaving: %w", c.UserID, err))
				continue
			}
			if _, err := c.ForgetRoom(ctx, room); err != nil {
				errs = append(errs, fmt.Errorf("%s forgetting: %w", c.UserID, err))
			}
		}
		if len(errs) > 0 {
			rec.Count(probes.CountCleanupFailure, 1)
			return mxclient.Classify(errors.Join(errs...))
		}
		return nil
	})
}

func newNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
