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

// persist writes the cached sessions to the store (best effort: a write
// that fails costs a full login after the next restart, nothing now).
//
// Every write holds all sessions, so one write per login would cost
// O(tenants²) when many tenants log in at once (a start with 10,000 tenants
// spent its first minute writing the file). Writers do not queue: a caller
// that finds a write under way returns, and the writer writes again once it
// is done if the sessions changed meanwhile, for up to persistLoop; a
// change left over after that is written by the next caller.
func (m *Manager) persist() {
	if m.Store == nil {
		return
	}
	start := time.Now()
	for {
		if !m.persistMu.TryLock() {
			// The writer re-reads the generation after unlocking, so this
			// change is written by it (or by this loop's next turn).
			return
		}
		m.mu.Lock()
		gen := m.gen
		if gen == m.saved {
			m.mu.Unlock()
			m.persistMu.Unlock()
			return
		}
		snap := make(map[string]*Session, len(m.sessions))
		for k, s := range m.sessions {
			if persisted(s.Method) {
				snap[k] = s
			}
		}
		m.mu.Unlock()
		err := m.Store.SaveSessions(snap)
		m.mu.Lock()
		if err == nil {
			m.saved = gen
		}
		m.mu.Unlock()
		m.persistMu.Unlock()
		// Read after unlocking: a change whose caller found the lock taken
		// happened before this read, and one after it finds the lock free.
		m.mu.Lock()
		dirty := m.gen != m.saved
		m.mu.Unlock()
		if !dirty || err != nil || time.Since(start) > persistLoop {
			return
		}
	}
}

// persistLoop bounds the time one caller (a probe run, holding a slot of
// the engine) spends writing sessions that others changed.
const persistLoop = time.Second

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
