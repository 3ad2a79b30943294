package matrix

import (
	"fmt"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// roundtripSteps and roomMessageSteps are the steps of each probe whose
// requests count the 429s they meet (login steps do not: a refused login is
// its own failure).
var (
	roundtripSteps   = []string{StepLogin, StepPeerLogin, StepSweep, StepCreateRoom, StepInvite, StepJoin, StepSend, StepReceive, StepPowerLevels, StepDisplayName, StepLeave, StepForget}
	roomMessageSteps = []string{StepLogin, StepSync, StepJoin, StepSend, StepReceive, StepPowerLevels}
)

// DeclaredCounts implements probes.DeclaredCounts: session renewals, 429s
// by step and the rooms cleanup could not leave.
func (p *RoundtripProbe) DeclaredCounts() []string {
	return append(rateLimitedCounts(roundtripSteps), probes.CountTokenRefresh, probes.CountCleanupFailure)
}

// DeclaredCounts implements probes.DeclaredCounts: session renewals and
// 429s by step.
func (p *RoomMessageProbe) DeclaredCounts() []string {
	return append(rateLimitedCounts(roomMessageSteps), probes.CountTokenRefresh)
}

func rateLimitedCounts(steps []string) []string {
	out := make([]string, 0, len(steps)+2)
	for _, s := range steps {
		out = append(out, RateLimitedCount(s))
	}
	return out
}

// RateLimitedCount is the Result.Counts key of 429s met in a step:
// "rate_limited:<step>" (plain "rate_limited" without a step).
func RateLimitedCount(step string) string {
	if step == "" {
		return probes.CountRateLimited
	}
	return probes.CountRateLimited + ":" + step
}

// ExplainRateLimit names the Synapse limiter a 429 in step most likely came
// from, judged by the endpoint and the retry_after_ms (each limiter refills
// at its own pace: rc_message one event per 5 s, rc_joins.local one join per
// 10 s, rc_room_creation one room per 62 s, rc_invites.per_user and
// rc_login one per 333 s), and says what to change.
func ExplainRateLimit(step string, retry time.Duration) string {
	var limiter, key string
	long := retry > 20*time.Second
	switch step {
	case StepCreateRoom:
		limiter, key = "rc_message", "the bot"
		if long {
			limiter = "rc_room_creation"
		}
	case StepInvite:
		limiter, key = "rc_message or rc_invites.per_issuer", "the bot"
		if long {
			limiter, key = "rc_invites.per_user", "the peer (invites it receives from every tenant)"
		}
	case StepJoin:
		limiter, key = "rc_message", "the joining account"
		if retry > 6*time.Second {
			limiter = "rc_joins.local"
		}
	case StepSend, StepLeave, StepPowerLevels, StepDisplayName:
		limiter, key = "rc_message", "the sending account"
	case StepLogin, StepPeerLogin:
		limiter, key = "rc_login.address", "mxprobe's address (every /login of every tenant)"
	default:
		limiter, key = "unknown", "the account"
	}
	return fmt.Sprintf("429 M_LIMIT_EXCEEDED, retry_after_ms %d: likely %s (keyed by %s); "+
		"make this probe rarer, give tenants peers of their own, or exempt the probe accounts (mxprobe check-config names the limiter and the command; docs/roundtrip.md)",
		retry.Milliseconds(), limiter, key)
}
