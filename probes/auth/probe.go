package auth

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

// LoginProbe proves that a tenant's bot can log in. Logins are a shared,
// rate-limited resource (Synapse's rc_login.address allows 5, then one per
// 333 s, for all tenants from one address), so the probe logs in afresh
// (every hop a step) only every FullLoginInterval and, in between, proves
// the bot's session with /account/whoami (renewing it by refresh when it is
// about to expire). It shares the bot session the room probes use: a full
// login replaces it for them too. A full login the login budget cannot
// afford is deferred (noted) while a session exists, and skips the run when
// none does. A session made through MAS is renewed by refresh every run
// between full logins (MAS answers it without the upstream provider).
type LoginProbe struct {
	Name    string
	Manager *Manager
	// Tenants are the tenants the probe runs for, by id.
	Tenants map[string]*config.Tenant
	// FullLoginInterval: how often a full login is made (0: every run).
	FullLoginInterval time.Duration
}

// DeclaredCounts implements probes.DeclaredCounts: session renewals and
// logins refused with 429.
func (p *LoginProbe) DeclaredCounts() []string {
	return []string{probes.CountTokenRefresh, CountRateLimitedLogin}
}

// Run implements probes.Prober.
func (p *LoginProbe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeLogin, tenant)
	t, ok := p.Tenants[tenant]
	if !ok {
		rec.AddStep(StepLogin, 0, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant))
		return rec.Finish()
	}
	acct, err := NewAccount(t, "bot", t.Bot)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return rec.Finish()
	}
	rec.SetMethod(acct.Config.Method)
	rec.Scrub(acct.Secrets()...)
	sess := p.Manager.Cached(acct.Key)
	now := p.Manager.now()
	due := sess == nil || p.FullLoginInterval <= 0 || now.Sub(sess.LoggedIn) >= p.FullLoginInterval
	if acct.Config.Method == config.MethodToken {
		due = false // a fixed token has no login to repeat: whoami proves it
	}
	deferred := ""
	budget := p.Manager.BudgetFor(acct.Config.Method)
	// A working session's re-login waits while the budget is spent, and
	// gives way to accounts still waiting for a first login.
	if due && sess != nil {
		switch {
		case !budget.Available():
			due, deferred = false, "the full login due is deferred by the login budget"
		case budget.OthersWaiting(acct.Key):
			due, deferred = false, "the full login due gives way to accounts waiting for a first login"
		}
	}
	if due {
		hadSession := sess != nil
		sess, err = p.Manager.Login(ctx, acct, rec)
		if err != nil {
			if !hadSession && probes.Classify(err) == probes.ClassLoginBudget && !p.Manager.wasRefused(acct.Key) {
				budget.SetWaiting(acct.Key, true)
			}
			return rec.Finish()
		}
		budget.SetWaiting(acct.Key, false)
		_ = rec.Step(StepWhoami, func() error { return p.whoami(ctx, acct, sess) })
		return rec.Finish()
	}
	// Between full logins: the cached session, renewed when about to expire;
	// a MAS session is renewed every run, so the refresh path is proven too
	// without a full login (which would reach the upstream provider).
	refreshed := false
	if isMASMethod(acct.Config.Method) && sess != nil && sess.RefreshToken != "" && p.Manager.canRefresh(acct.Config.Method) {
		sess, err = p.Manager.Refresh(ctx, acct, rec)
		refreshed = true
	} else {
		sess, err = p.Manager.Session(ctx, acct, rec)
	}
	if err != nil {
		return rec.Finish()
	}
	rec.Scrub(sess.AccessToken, sess.RefreshToken)
	t0 := time.Now()
	err = p.whoami(ctx, acct, sess)
	if err != nil && probes.StatusOf(err) == http.StatusUnauthorized {
		// The session was cancelled: recover it (refresh or log in) and prove it again.
		rec.Note("the session was no longer valid")
		ns, rerr := p.Manager.Recover(ctx, acct, sess, rec)
		if rerr != nil {
			return rec.Finish()
		}
		rec.Scrub(ns.AccessToken, ns.RefreshToken)
		_ = rec.Step(StepWhoami, func() error { return p.whoami(ctx, acct, ns) })
		return rec.Finish()
	}
	rec.AddStep(StepWhoami, time.Since(t0), err)
	if err == nil {
		how := "session proven"
		if refreshed {
			how = "session proven by refresh and whoami"
		}
		note := fmt.Sprintf("%s; last full login %s ago (one every %s)",
			how, p.Manager.now().Sub(sess.LoggedIn).Round(time.Second), p.FullLoginInterval)
		if deferred != "" {
			note += "; " + deferred
		}
		rec.Note(note)
	}
	return rec.Finish()
}

// whoami proves sess without writing to it: the session is shared with the
// room probes running meanwhile.
func (p *LoginProbe) whoami(ctx context.Context, acct Account, sess *Session) error {
	cp := *sess
	return p.Manager.Whoami(ctx, acct, &cp)
}
