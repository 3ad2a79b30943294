// Package synlimit is a reverse proxy that applies Synapse's rate limiters in
// front of a test homeserver (Dendrite, whose own limiter covers neither
// createRoom nor send), so tests and the demo meet the 429s a real Synapse
// with default settings would answer. It is for tests and the demo only,
// never for the daemon.
//
// Everything here follows element-hq/synapse v1.157.1; each rule names the
// file it comes from.
package synlimit

import "time"

// Settings is one limiter's configuration: burst_count actions at once,
// refilled at per_second (synapse/config/ratelimiting.py, RatelimitSettings).
type Settings struct {
	PerSecond float64
	Burst     int
}

// Config holds the limiters the proxy applies, named as in Synapse's
// homeserver.yaml.
type Config struct {
	Message          Settings // rc_message
	RoomCreation     Settings // rc_room_creation
	JoinsLocal       Settings // rc_joins.local
	JoinsPerRoom     Settings // rc_joins_per_room
	InvitesPerRoom   Settings // rc_invites.per_room
	InvitesPerUser   Settings // rc_invites.per_user
	InvitesPerIssuer Settings // rc_invites.per_issuer
	LoginAddress     Settings // rc_login.address
	LoginAccount     Settings // rc_login.account
	LoginFailed      Settings // rc_login.failed_attempts
}

// Defaults are Synapse's defaults (synapse/config/ratelimiting.py v1.157.1,
// RatelimitConfig.read_config, each under its option's name: rc_message
// 0.2/s burst 10; rc_login.address, .account 0.003/s burst 5 and
// .failed_attempts 0.17/s burst 3 (RatelimitSettings.parse default 0.17/3);
// rc_joins.local 0.1/s burst 10; rc_joins_per_room 1/s burst 10;
// rc_invites.per_room 0.3/s burst 10, .per_user 0.003/s burst 5,
// .per_issuer 0.3/s burst 10; rc_room_creation 0.016/s burst 10).
func Defaults() Config {
	return Config{
		Message:          Settings{0.2, 10},
		RoomCreation:     Settings{0.016, 10},
		JoinsLocal:       Settings{0.1, 10},
		JoinsPerRoom:     Settings{1, 10},
		InvitesPerRoom:   Settings{0.3, 10},
		InvitesPerUser:   Settings{0.003, 5},
		InvitesPerIssuer: Settings{0.3, 10},
		LoginAddress:     Settings{0.003, 5},
		LoginAccount:     Settings{0.003, 5},
		LoginFailed:      Settings{0.17, 3},
	}
}

// Limiter names as they appear in Config and in Stats.
const (
	RcMessage          = "rc_message"
	RcRoomCreation     = "rc_room_creation"
	RcJoinsLocal       = "rc_joins.local"
	RcJoinsPerRoom     = "rc_joins_per_room"
	RcInvitesPerRoom   = "rc_invites.per_room"
	RcInvitesPerUser   = "rc_invites.per_user"
	RcInvitesPerIssuer = "rc_invites.per_issuer"
	RcLoginAddress     = "rc_login.address"
	RcLoginAccount     = "rc_login.account"
	RcLoginFailed      = "rc_login.failed_attempts"
)

func (c Config) settings(name string) Settings {
	switch name {
	case RcMessage:
		return c.Message
	case RcRoomCreation:
		return c.RoomCreation
	case RcJoinsLocal:
		return c.JoinsLocal
	case RcJoinsPerRoom:
		return c.JoinsPerRoom
	case RcInvitesPerRoom:
		return c.InvitesPerRoom
	case RcInvitesPerUser:
		return c.InvitesPerUser
	case RcInvitesPerIssuer:
		return c.InvitesPerIssuer
	case RcLoginAddress:
		return c.LoginAddress
	case RcLoginAccount:
		return c.LoginAccount
	case RcLoginFailed:
		return c.LoginFailed
	}
	return Settings{}
}

// entry is Synapse's per-key record: (action_count, time_start).
type entry struct {
	count int
	start float64 // seconds
}

// limiter is Synapse's Ratelimiter (synapse/api/ratelimiting.py, class
// Ratelimiter): a leaky bucket per key.
type limiter struct {
	name    string
	actions map[string]entry
}

// canDo is Ratelimiter.can_do_action (synapse/api/ratelimiting.py)
// after the exemption checks: the count performed so far leaks at rate per
// second since time_start; the action is allowed unless performed_count >
// burst_count - n_actions; time_allowed is time_start + (action_count -
// burst_count + 1) / rate, not before now. Only allowed actions are recorded.
func (l *limiter) canDo(key string, rate float64, burst int, update bool, now time.Time) (bool, time.Duration) {
	t := float64(now.UnixNano()) / 1e9
	e, ok := l.actions[key]
	if !ok {
		e = entry{0, t}
	}
	performed := float64(e.count) - (t-e.start)*rate
	if performed < 0 {
		performed = 0
		e = entry{0, t}
	}
	const n = 1
	allowed := !(performed > float64(burst-n))
	if allowed {
		e.count += n
		if update {
			// _record_action_inner: an entry whose prune time has passed is dropped.
			if rate > 0 && e.start+float64(e.count)/rate <= t {
				delete(l.actions, key)
			} else {
				l.actions[key] = e
			}
		}
	}
	if rate <= 0 {
		return allowed, 0
	}
	allowedAt := e.start + float64(e.count-burst+1)/rate
	if allowedAt < t {
		allowedAt = t
	}
	return allowed, time.Duration((allowedAt - t) * 1e9)
}

// record is Ratelimiter.record_action: count an action even over the limit.
func (l *limiter) record(key string, rate float64, now time.Time) {
	t := float64(now.UnixNano()) / 1e9
	e, ok := l.actions[key]
	if !ok {
		e = entry{0, t}
	}
	e.count++
	if rate > 0 && e.start+float64(e.count)/rate <= t {
		delete(l.actions, key)
		return
	}
	l.actions[key] = e
}
