package matrix

import (
	"context"
	"time"

	"maunium.net/go/mautrix"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// BotSession is the tenant bot's session during one run, for probe types of
// other packages (media): the same login, M_UNKNOWN_TOKEN recovery and 429
// handling as this package's own probes, so every type that acts as the bot
// behaves alike toward the homeserver.
type BotSession struct {
	r *runner
	a *actor
}

// NewBotSession prepares the bot's session of one run recorded by rec; Login
// gets it.
func NewBotSession(rec *probes.Recorder, m *auth.Manager, acct auth.Account) *BotSession {
	return &BotSession{r: &runner{rec: rec, m: m}, a: &actor{acct: acct}}
}

// Login gets the bot's session (cached, renewed or a fresh login, whose
// steps are recorded in the run).
func (b *BotSession) Login(ctx context.Context) error { return b.r.login(ctx, b.a) }

// Attempt runs one homeserver request of the bot as part of step (429s
// that fit the deadline are waited out and counted under step; on
// M_UNKNOWN_TOKEN the bot logs in again once, recorded as steps of their
// own, and fn runs again). It returns the classified error, the raw error
// of the last try and the time the re-login took, which the caller leaves
// out of the step's time.
func (b *BotSession) Attempt(ctx context.Context, step string, fn func(ctx context.Context, cli *mautrix.Client) error) (err, raw error, relog time.Duration) {
	b.r.cur = step
	return b.r.attempt(ctx, b.a, true, fn)
}

// LastRetryAfter is the wait the homeserver asked for in the last 429 met.
func (b *BotSession) LastRetryAfter() time.Duration { return b.r.lastWait }

// UserID is the bot's user id: its session's, or the configured user's.
func (b *BotSession) UserID() string { return string(b.a.userID()) }
