package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// actor is one account taking part in a run (the tenant bot or the peer),
// with its session and client.
type actor struct {
	acct auth.Account
	// prefix names the login steps of this actor ("" for the bot, "peer_"
	// for the peer), so the two logins stay apart in the step metrics.
	prefix string
	sess   *auth.Session
	cli    *mautrix.Client
	// recoveries counts the renewals after M_UNKNOWN_TOKEN in this run, and
	// unproven is set while the session they gave has not yet served a
	// request. A renewed token that is refused at once is not renewed again
	// (no loop); one that worked and later expired (a run outlasting a short
	// token lifetime) is, up to maxRecoveries times per run.
	recoveries int
	unproven   bool
}

// maxRecoveries bounds the renewals after M_UNKNOWN_TOKEN of one actor in
// one run.
const maxRecoveries = 3

// allowOneRecovery lets the actor renew its session once more, whatever
// happened before in the run: the cleanup's own chance to log in again when
// its token was cancelled (say by another process's login).
func (a *actor) allowOneRecovery() {
	a.recoveries = min(a.recoveries, maxRecoveries-1)
	a.unproven = false
}

// runner carries what the steps of one run share.
type runner struct {
	rec *probes.Recorder
	m   *auth.Manager
	// cur is the step in progress (for the step label of 429s); lastWait
	// the retry_after the homeserver gave in the last 429.
	cur      string
	lastWait time.Duration
}

// rateHook counts every 429 met, by step.
func (r *runner) rateHook() mxclient.RateLimitHook {
	return func(wait time.Duration, _ bool) {
		r.lastWait = wait
		r.rec.Count(RateLimitedCount(r.cur), 1)
	}
}

// login gets a's session (cached, renewed or a fresh login, whose steps
// are recorded with a's prefix).
func (r *runner) login(ctx context.Context, a *actor) error {
	var sess *auth.Session
	var err error
	if a.prefix == "" {
		sess, err = r.m.Session(ctx, a.acct, r.rec)
	} else {
		sub := probes.NewRecorder("", "", "")
		sess, err = r.m.Session(ctx, a.acct, sub)
		r.merge(sub.Finish(), a.prefix, true)
	}
	if err != nil {
		return err
	}
	// The peer logged in on a sub-record: its secrets are the run's too.
	r.rec.Scrub(append(a.acct.Secrets(), sess.AccessToken)...)
	if a.prefix == "" && sess.Method != "" {
		r.rec.SetMethod(sess.Method) // the run used a session of this method, cached or fresh
	}
	return a.use(r.m, sess)
}

// userID is the actor's user id: the session's, or (a fixed token whose
// session carries none) the configured user's.
func (a *actor) userID() id.UserID {
	if a.sess != nil && a.sess.UserID != "" {
		return id.UserID(a.sess.UserID)
	}
	return id.UserID(a.acct.ExpectedUserID())
}

func (a *actor) use(m *auth.Manager, sess *auth.Session) error {
	cli, err := m.Client(sess)
	if err != nil {
		return err
	}
	a.sess, a.cli = sess, cli
	return nil
}

// merge copies the steps (when steps is set) and counts of a sub-record
// into the run's record.
func (r *runner) merge(sub probes.Result, prefix string, steps bool) {
	if steps {
		for _, s := range sub.Steps {
			var err error
			if !s.OK {
				err = &probes.Error{Class: s.Class, Status: s.Status, Err: errors.New(s.Error)}
			}
			r.rec.AddStep(prefix+s.Name, s.Duration, err)
			if s.Detail != "" {
				r.rec.Note(s.Detail)
			}
		}
	}
	if v, ok := sub.Signals[probes.SignalNextLoginSeconds]; ok {
		r.rec.Signal(probes.SignalNextLoginSeconds, v)
	}
	for k, n := range sub.Counts {
		// A sub-record's 429s are counted under the step as merged.
		if step, ok := strings.CutPrefix(k, probes.CountRateLimited+":"); ok && steps {
			k = RateLimitedCount(prefix + step)
		}
		r.rec.Count(k, n)
	}
	if sub.Method != "" && prefix == "" {
		r.rec.SetMethod(sub.Method)
	}
}

// attempt runs one homeserver request of a (waiting out 429s that fit the
// deadline). On M_UNKNOWN_TOKEN it drops the session, logs in again once and
// retries. It returns the classified error, the raw error of the last try
// (for errcode checks) and the time the re-login took, which the caller
// leaves out of its step: the re-login is recorded as steps of its own when
// logSteps is set (otherwise only its counts are kept).
func (r *runner) attempt(ctx context.Context, a *actor, logSteps bool, fn func(ctx context.Context, cli *mautrix.Client) error) (err, raw error, relog time.Duration) {
	call := func() error {
		return mxclient.Call(ctx, r.rateHook(), func(ctx context.Context) error {
			raw = fn(ctx, a.cli)
			return raw
		})
	}
	err = call()
	if err == nil {
		a.unproven = false
	}
	if err == nil || a.unproven || a.recoveries >= maxRecoveries || !mxclient.IsUnknownToken(raw) {
		return err, raw, 0
	}
	a.recoveries++
	a.unproven = true
	t0 := time.Now()
	sub := probes.NewRecorder("", "", "")
	sess, rerr := r.m.Recover(ctx, a.acct, a.sess, sub)
	if mxclient.SoftLogout(raw) {
		sub.Note("soft logout")
	}
	res := sub.Finish()
	relog = time.Since(t0)
	r.merge(res, a.prefix, logSteps)
	if rerr != nil {
		return rerr, raw, relog
	}
	if err := a.use(r.m, sess); err != nil {
		return err, raw, relog
	}
	if err = call(); err == nil {
		a.unproven = false
	}
	return err, raw, relog
}

// step runs fn as the timed step name of a, without the time of a re-login.
func (r *runner) step(ctx context.Context, name string, a *actor, fn func(ctx context.Context, cli *mautrix.Client) error) error {
	t0 := time.Now()
	r.cur = name
	err, _, relog := r.attempt(ctx, a, true, fn)
	if probes.Classify(err) == probes.ClassRateLimited {
		// The run's error names the likely limiter and what to change.
		err = &probes.Error{Class: probes.ClassRateLimited, Status: http.StatusTooManyRequests,
			Err: fmt.Errorf("%v; %s", err, ExplainRateLimit(name, r.lastWait))}
	}
	r.rec.AddStep(name, time.Since(t0)-relog, err)
	return err
}

// notInRoom reports whether raw is the homeserver refusing because the user
// is not in the room (M_FORBIDDEN, "User not in room" and the like).
func notInRoom(raw error) bool {
	return mxclient.Is(raw, mautrix.MForbidden) || mxclient.HTTPStatus(raw) == http.StatusForbidden
}

// gone reports whether raw says the membership is already gone (leaving a
// room one is not in, forgetting an unknown room).
func gone(raw error) bool {
	switch mxclient.ErrCode(raw) {
	case "M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN":
		return true
	}
	s := mxclient.HTTPStatus(raw)
	return s == http.StatusForbidden || s == http.StatusNotFound
}
