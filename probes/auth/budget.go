package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Budget is a sliding-window limit on full logins: at most Max logins in
// any Window. A budget of N per N / rate never exceeds a token bucket of
// burst ≥ N refilled at rate (Synapse's rc_login.address), whatever the
// timing. It is generic: a login method family (Synapse's /login, MAS's
// login pages) gets a budget of its own with Manager.SetBudget.
type Budget struct {
	// Name says whose limit this budget keeps under (for messages).
	Name   string
	Max    int
	Window time.Duration
	// MinGap spreads the logins out: at least this long between two (0:
	// none). The MAS budget keeps Window/Max between logins, so the
	// provider's limit, shared with real users, never sees a burst.
	MinGap time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// After is the timer of waits for a slot (time.After's semantics;
	// nil: a real timer). Tests drive it with their clock.
	After func(time.Duration) <-chan time.Time
	// Store keeps the spend across restarts under Key (nil: memory only),
	// so a restarted process never spends what the homeserver's or the
	// provider's bucket has not yet refilled. Call Restore once set.
	Store BudgetStore
	Key   string

	mu    sync.Mutex
	taken []time.Time
	// queue: accounts waiting for a slot (Wait), served accounts without
	// a session first, then the longest waiting; wake is closed (and
	// replaced) whenever the queue or the spend changes.
	queue map[string]queued
	wake  chan struct{}
	seq   uint64
	// waiting: accounts with no session whose full login the budget
	// refused, by when (they go before re-logins of working sessions).
	waiting map[string]time.Time
}

// waitingTTL: a waiting account not heard of again for this long (its
// tenant was removed) no longer holds re-logins back.
const waitingTTL = 15 * time.Minute

// SetWaiting records that key has no session and could not log in for the
// budget (on), or that it logged in (off).
func (b *Budget) SetWaiting(key string, on bool) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !on {
		delete(b.waiting, key)
		return
	}
	if b.waiting == nil {
		b.waiting = map[string]time.Time{}
	}
	b.waiting[key] = b.now()
}

// OthersWaiting reports whether an account other than key waits for its
// first login: a re-login of a working session then gives way.
func (b *Budget) OthersWaiting(key string) bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for k, t := range b.waiting {
		if now.Sub(t) >= waitingTTL {
			delete(b.waiting, k)
			continue
		}
		if k != key {
			return true
		}
	}
	return false
}

func (b *Budget) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Take spends one login if the window has room and no account waits for a
// slot; otherwise it reports how long until it will.
func (b *Budget) Take() (bool, time.Duration) {
	if b == nil || b.Max <= 0 {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) > 0 {
		return false, b.slotsLocked(len(b.queue)+1, b.now())
	}
	return b.takeLocked()
}

// takeLocked is Take without the queue (mu held).
func (b *Budget) takeLocked() (bool, time.Duration) {
	now := b.now()
	b.prune(now)
	if len(b.taken) >= b.Max {
		return false, b.taken[0].Add(b.Window).Sub(now)
	}
	if wait := b.gapWait(now); wait > 0 {
		return false, wait
	}
	b.taken = append(b.taken, now)
	b.save()
	b.broadcast()
	return true, 0
}

// prune drops logins out of the window (mu held).
func (b *Budget) prune(now time.Time) {
	keep := b.taken[:0]
	for _, t := range b.taken {
		if now.Sub(t) < b.Window {
			keep = append(keep, t)
		}
	}
	b.taken = keep
}

// slotsLocked is how long until the n-th next login would be allowed, if
// every earlier one took its slot as soon as it came (mu held).
func (b *Budget) slotsLocked(n int, now time.Time) time.Duration {
	b.prune(now)
	sim := append([]time.Time(nil), b.taken...)
	at := now
	for i := 0; i < n; i++ {
		for {
			in := 0
			for _, t := range sim {
				if at.Sub(t) < b.Window {
					in++
				}
			}
			next := at
			if in >= b.Max {
				// The oldest login still in the window leaves it.
				for _, t := range sim {
					if at.Sub(t) < b.Window {
						next = t.Add(b.Window)
						break
					}
				}
			}
			if b.MinGap > 0 && len(sim) > 0 {
				if g := sim[len(sim)-1].Add(b.MinGap); g.After(next) {
					next = g
				}
			}
			if !next.After(at) {
				break
			}
			at = next
		}
		sim = append(sim, at)
	}
	return at.Sub(now)
}

// Restore reads the spend kept in Store (once, before the first login):
// logins still in the window count as if this process had made them.
func (b *Budget) Restore() {
	if b == nil || b.Store == nil {
		return
	}
	spent := b.Store.LoadSpend(b.Key)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for _, t := range spent {
		// A time in the future (a clock stepped back) counts as now.
		if t.After(now) {
			t = now
		}
		b.taken = append(b.taken, t)
	}
	sort.Slice(b.taken, func(i, j int) bool { return b.taken[i].Before(b.taken[j]) })
	b.prune(now)
}

// save writes the spend to Store (mu held; best effort: a failed write
// costs a more careful restart, nothing now).
func (b *Budget) save() {
	if b.Store != nil {
		_ = b.Store.SaveSpend(b.Key, b.taken)
	}
}

func (b *Budget) broadcast() {
	if b.wake != nil {
		close(b.wake)
	}
	b.wake = make(chan struct{})
}

// gapWait is how long until MinGap has passed since the last login (mu held).
func (b *Budget) gapWait(now time.Time) time.Duration {
	if b.MinGap <= 0 || len(b.taken) == 0 {
		return 0
	}
	return b.taken[len(b.taken)-1].Add(b.MinGap).Sub(now)
}

// Available reports whether a login would be allowed now, without spending.
func (b *Budget) Available() bool {
	if b == nil || b.Max <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) > 0 {
		return false
	}
	now := b.now()
	n := 0
	for _, t := range b.taken {
		if now.Sub(t) < b.Window {
			n++
		}
	}
	return n < b.Max && b.gapWait(now) <= 0
}

// SetBudget makes every fresh login of the given methods spend from b (nil
// removes the budget of those methods).
func (m *Manager) SetBudget(b *Budget, methods ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.budgets == nil {
		m.budgets = map[string]*Budget{}
	}
	for _, meth := range methods {
		if b == nil {
			delete(m.budgets, meth)
		} else {
			m.budgets[meth] = b
		}
	}
}

// BudgetFor returns the budget of a login method, if any.
func (m *Manager) BudgetFor(method string) *Budget {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.budgets[method]
}

// spend takes one login of key's method from its budget, waiting for the
// budget's next slot when it comes before the run's deadline (a timed step,
// login_budget_wait); first says the account has no session (it goes
// before re-logins). An account whose last login was refused (a wrong
// password) may try again only after its share of the budget (window /
// logins), so one broken tenant cannot spend every other tenant's logins.
func (m *Manager) spend(ctx context.Context, method, key string, first bool, rec *probes.Recorder) error {
	b := m.BudgetFor(method)
	if b == nil || b.Max <= 0 {
		return nil
	}
	share := b.Window / time.Duration(b.Max)
	m.mu.Lock()
	last, failed := m.refused[key]
	m.mu.Unlock()
	if failed {
		if wait := last.Add(share).Sub(b.now()); wait > 0 {
			return probes.Errorf(probes.ClassLoginBudget,
				"the last login of this account was refused; it may try again in %s (its share of the login budget, one per %s); the run is skipped",
				wait.Round(time.Second), share.Round(time.Second))
		}
		if b.OthersWaiting(key) {
			return probes.Errorf(probes.ClassLoginBudget,
				"the last login of this account was refused; it gives way to accounts waiting for a first login; the run is skipped")
		}
	}
	waited, ok, next := b.Wait(ctx, key, first)
	if ok {
		if waited > 0 {
			rec.AddStep(StepLoginBudgetWait, waited, nil)
			rec.Note(fmt.Sprintf("waited %s for the login budget's next slot (%d logins per %s, kept under %s)",
				waited.Round(time.Millisecond), b.Max, b.Window, b.Name))
		}
		return nil
	}
	spread := ""
	if b.MinGap > 0 {
		spread = fmt.Sprintf(", at least %s apart", b.MinGap)
	}
	return &BudgetError{Next: next, Err: fmt.Errorf(
		"login budget spent (%d logins per %s%s, kept under %s): next full login possible in %s, after the run's deadline; the run is skipped",
		b.Max, b.Window, spread, b.Name, next.Round(time.Second))}
}

// BudgetError is a full login the budget could not afford before the run's
// deadline (class login_budget); Next is how long until its slot.
type BudgetError struct {
	Next time.Duration
	Err  error
}

func (e *BudgetError) Error() string { return e.Err.Error() }

// Unwrap gives the class (probes.Classify).
func (e *BudgetError) Unwrap() error {
	return &probes.Error{Class: probes.ClassLoginBudget, Err: e.Err}
}

// wasRefused reports whether key's last login was refused: such an account
// waits for its own share of the budget, not for a first login.
func (m *Manager) wasRefused(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.refused[key]
	return ok
}

// refusedClasses are the failures that say the account's credentials were
// refused: by the homeserver or MAS (auth_failed), or by the upstream
// provider behind MAS (upstream_login). Retrying them at once cannot help.
var refusedClasses = map[probes.Class]bool{probes.ClassAuthFailed: true, ClassUpstreamLogin: true}

// noteLogin remembers whether key's login was refused (refusedClasses).
func (m *Manager) noteLogin(method, key string, err error) {
	b := m.BudgetFor(method)
	if b == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refused == nil {
		m.refused = map[string]time.Time{}
	}
	if err != nil && refusedClasses[probes.Classify(err)] {
		m.refused[key] = b.now()
	} else {
		delete(m.refused, key)
	}
}

// Instance ids: every process logs in on devices of its own, so a daemon, a
// second replica and a CLI run never cancel each other's tokens.

// InstanceFromDir returns the instance id kept in dir (created on first
// use), so a daemon restarted with the same data_dir reuses its devices.
func InstanceFromDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "instance-id")
	if b, err := os.ReadFile(p); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	}
	id := "d-" + RandomID()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, os.Rename(tmp, p)
}

// RandomID returns 12 random hex digits.
func RandomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// deviceID derives the device of an account for an instance.
func deviceID(instance, key string) string {
	sum := sha256.Sum256([]byte(instance + "\x00" + key))
	return "MXPROBE" + strings.ToUpper(hex.EncodeToString(sum[:5]))
}

// Logouter is a Method whose sessions can be ended (the device removed);
// short-lived processes log out the sessions they created.
type Logouter interface {
	Logout(ctx context.Context, m *Manager, sess *Session) error
}

// Logout implements Logouter: POST /logout removes the device and its token.
func (PasswordMethod) Logout(ctx context.Context, m *Manager, sess *Session) error {
	cli, err := m.Client(sess)
	if err != nil {
		return err
	}
	return mxclient.Call(ctx, nil, func(ctx context.Context) error {
		_, err := cli.Logout(ctx)
		return err
	})
}

// LogoutAll ends every cached session this manager created by a fresh
// login whose method can log out (a configured fixed token is never logged
// out), so a short-lived process leaves no device behind. It returns the
// number of sessions ended and the errors met.
func (m *Manager) LogoutAll(ctx context.Context) (int, error) {
	m.mu.Lock()
	type item struct {
		key  string
		sess *Session
	}
	var items []item
	for k, s := range m.sessions {
		items = append(items, item{k, s})
	}
	m.mu.Unlock()
	n := 0
	var errs []string
	for _, it := range items {
		meth, err := m.method(it.sess.Method)
		if err != nil {
			continue
		}
		lo, ok := meth.(Logouter)
		if !ok {
			continue
		}
		if err := lo.Logout(ctx, m, it.sess); err != nil && mxclient.HTTPStatus(err) != http.StatusUnauthorized {
			errs = append(errs, fmt.Sprintf("%s: %v", it.key, err))
			continue
		}
		m.Forget(it.key)
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("logout: %s", strings.Join(errs, "; "))
	}
	return n, nil
}
