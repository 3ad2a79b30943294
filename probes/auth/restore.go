package auth

import (
	"context"
	"net/http"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

// StepSessionResume is the step that proves a session read from the store
// (whoami) before its first use after a restart.
const StepSessionResume = "session_resume"

// persisted reports whether sessions of a login method are stored: only
// those that cost a full login. A fixed token is in the configuration
// already, and an application service logs in without any limit.
func persisted(method string) bool {
	return method != config.MethodToken && method != config.MethodAppService
}

// Restore reads the stored sessions into the cache (before the first
// login). Each is proven before its first use; a refused one is dropped
// and replaced by a full login within the budget. It returns how many
// sessions were restored.
func (m *Manager) Restore() int {
	if m.Store == nil {
		return 0
	}
	stored := m.Store.LoadSessions()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, s := range stored {
		if _, ok := m.sessions[k]; ok || !persisted(s.Method) {
			continue
		}
		s.restored = true
		m.sessions[k] = s
		n++
	}
	return n
}

// persistSave records one session in the store, persistDelete drops one
// (best effort: a write that fails costs a full login after the next
// restart, nothing now; the store logs it). Each is one small append, so
// a login costs the same whatever the number of tenants. storeMu is held.
func (m *Manager) persistSave(key string, s *Session) {
	if m.Store != nil {
		_ = m.Store.SaveSession(key, s)
	}
}

func (m *Manager) persistDelete(key string) {
	if m.Store != nil {
		_ = m.Store.DeleteSession(key)
	}
}

// restoredFor checks a restored session against the account before use:
// one made for another homeserver or by another login method (the
// configuration changed across the restart) is dropped (nil). The caller
// holds the account's lock.
func (m *Manager) restoredFor(acct Account, sess *Session) *Session {
	if sess == nil || !sess.restored {
		return sess
	}
	if sess.Method != acct.Config.Method || sess.HomeserverURL != acct.HomeserverURL {
		m.Forget(acct.Key)
		return nil
	}
	return sess
}

// resume proves a restored session with whoami (a timed step) before its
// first use. A refused session (401, or another user: the configuration
// changed) is dropped and replaced by a full login; any other failure
// fails the step, and the session stays restored for the next run. The
// caller holds the account's lock.
func (m *Manager) resume(ctx context.Context, acct Account, sess *Session, rec *probes.Recorder) (*Session, error) {
	rec.Scrub(sess.AccessToken, sess.RefreshToken)
	cp := *sess
	t0 := time.Now()
	err := m.Whoami(ctx, acct, &cp)
	d := time.Since(t0)
	switch {
	case err == nil:
		cp.restored = false
		m.store(acct.Key, &cp)
		rec.AddStep(StepSessionResume, d, nil)
		rec.Note("session kept across the restart, proven by whoami")
		return &cp, nil
	case probes.StatusOf(err) == http.StatusUnauthorized || probes.Classify(err) == probes.ClassIdentityMismatch:
		rec.AddStep(StepSessionResume, d, nil)
		rec.Note("the stored session was refused; a full login replaces it")
		m.Forget(acct.Key)
		return m.login(ctx, acct, rec, nil)
	}
	rec.AddStep(StepSessionResume, d, err)
	return nil, err
}
