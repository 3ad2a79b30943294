package alerts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/config"
)

// worker delivers the notifications of one notifier, one at a time, so a
// dead or slow notifier only delays itself. What is due is derived from the
// alert entries (their delivery log), so pending deliveries survive a
// restart with the state file.
type worker struct {
	m          *Manager
	n          Notifier
	timeout    time.Duration
	maxBackoff time.Duration
	resend     time.Duration

	kick chan struct{}

	mu      sync.Mutex
	running bool
	quit    chan struct{}
	done    chan struct{}
	cancel  context.CancelFunc
	// retry state per alert instance (in memory: a restart retries at once).
	attempts map[string]int
	notUntil map[string]time.Time
}

func newWorker(m *Manager, n Notifier, cfg *config.Config) *worker {
	w := &worker{m: m, n: n, timeout: 10 * time.Second, maxBackoff: 5 * time.Minute,
		kick: make(chan struct{}, 1), attempts: map[string]int{}, notUntil: map[string]time.Time{}}
	for _, nc := range cfg.Alerting.Notifiers {
		if nc.Name == n.Name() {
			w.timeout = nc.Timeout.D()
			w.maxBackoff = nc.MaxBackoff.D()
		}
	}
	if r, ok := n.(Resender); ok {
		w.resend = r.ResendInterval()
	}
	return w
}

func (w *worker) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		return
	}
	w.running = true
	w.quit = make(chan struct{})
	w.done = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.loop(ctx, w.quit, w.done)
}

// halt stops the loop after the delivery in flight.
func (w *worker) halt() {
	w.mu.Lock()
	if !w.running {
		w.mu.Unlock()
		return
	}
	w.running = false
	close(w.quit)
	done := w.done
	w.mu.Unlock()
	<-done
	w.mu.Lock()
	w.cancel()
	w.mu.Unlock()
}

// abort cancels a delivery in flight.
func (w *worker) abort() {
	w.mu.Lock()
	if w.cancel != nil {
		w.cancel()
	}
	w.mu.Unlock()
}

func (w *worker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *worker) loop(ctx context.Context, quit, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(w.m.poll)
	defer t.Stop()
	for {
		unsaved := false
		for _, j := range w.due() {
			select {
			case <-quit:
				w.saveIf(unsaved)
				return
			default:
			}
			if w.deliver(ctx, j) {
				unsaved = true
			}
		}
		w.saveIf(unsaved)
		select {
		case <-quit:
			return
		case <-w.kick:
		case <-t.C:
		}
	}
}

type job struct {
	key string // entry key
	id  string // instance id
	n   Notification
}

// due lists the notifications this notifier owes, marking firing ones as
// wanted.
func (w *worker) due() []job {
	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.notifiers[w.n.Name()] != w {
		return nil
	}
	now := m.now()
	real := time.Now()
	name := w.n.Name()
	var out []job
	for k, e := range m.entries {
		if e.State != StateFiring && e.State != StateResolved {
			continue
		}
		labels := m.labels(e)
		if !m.routed(name, labels) {
			continue
		}
		d := e.Deliveries[name]
		if d == nil {
			d = &Delivery{}
		}
		var want bool
		resend := false
		switch e.State {
		case StateFiring:
			if m.muted(labels, now) {
				continue
			}
			if !d.Firing {
				want = true
			} else if w.resend > 0 && real.Sub(d.LastSent) >= w.resend {
				want, resend = true, true
			}
			if want && !d.Wanted {
				d.Wanted = true
				m.setDelivery(e, name, d)
				m.dirty = true
			}
		case StateResolved:
			want = (d.Firing || d.Wanted) && !d.Resolved
		}
		if !want {
			continue
		}
		id := string(e.State) + "/" + instanceID(e)
		if until, ok := w.notUntil[id]; ok && real.Before(until) {
			continue
		}
		n := m.notification(e)
		n.Ref = d.Ref
		n.Resend = resend
		out = append(out, job{key: k, id: id, n: n})
	}
	return out
}

func (m *Manager) setDelivery(e *entry, name string, d *Delivery) {
	if e.Deliveries == nil {
		e.Deliveries = map[string]*Delivery{}
	}
	e.Deliveries[name] = d
}

func instanceID(e *entry) string {
	return e.Rule + "\x00" + e.Tenant + "\x00" + e.ActiveAt.UTC().Format(time.RFC3339Nano)
}

// saveIf writes the state file when a round left deliveries unsaved.
func (w *worker) saveIf(unsaved bool) {
	if !unsaved {
		return
	}
	if err := w.m.Save(); err != nil {
		w.m.logger.Error("saving alert state failed", "err", err)
	}
}

// deliver sends one notification and records it. It reports whether the
// record still has to be saved: deliveries to a notifier that takes the
// same alert twice without harm (a Resender: Alertmanager deduplicates by
// labels) are saved once per round of due work, others at once.
func (w *worker) deliver(parent context.Context, j job) (unsaved bool) {
	ctx, cancel := context.WithTimeout(parent, w.timeout)
	ref, err := w.n.Notify(ctx, j.n)
	cancel()
	name := w.n.Name()
	if err != nil {
		w.m.metrics.notified(name, "failure")
		w.attempts[j.id]++
		delay := backoff(w.m.baseBackoff, w.maxBackoff, w.attempts[j.id])
		w.notUntil[j.id] = time.Now().Add(delay)
		w.m.logger.Warn("notification failed; will retry", "notifier", name, "rule", j.n.Rule, "tenant", j.n.Tenant,
			"state", j.n.State, "attempt", w.attempts[j.id], "retry_in", delay.Round(time.Millisecond), "err", err)
		return false
	}
	delete(w.attempts, j.id)
	delete(w.notUntil, j.id)
	w.m.metrics.notified(name, "success")
	m := w.m
	m.mu.Lock()
	e := m.entries[j.key]
	if e != nil && e.ActiveAt.Equal(j.n.Since) {
		d := e.Deliveries[name]
		if d == nil {
			d = &Delivery{}
			m.setDelivery(e, name, d)
		}
		switch j.n.State {
		case StateFiring:
			d.Firing, d.Wanted = true, true
			d.LastSent = time.Now()
			if ref != "" {
				d.Ref = ref
			}
		case StateResolved:
			d.Resolved = true
		}
	}
	m.mu.Unlock()
	if !j.n.Resend {
		m.logger.Info("notification delivered", "notifier", name, "rule", j.n.Rule, "tenant", j.n.Tenant, "state", j.n.State)
	}
	if w.resend > 0 {
		// Saving the whole state file (every tenant's entry) after each of
		// hundreds of re-sends made a replica with tens of thousands of
		// tenants re-send each alert less often than its endsAt allowed.
		// A crash before the round's save repeats that round's deliveries,
		// which Alertmanager takes as the same alerts.
		return true
	}
	// The notification log is written before the next delivery, so a crash
	// repeats at most the one delivery in flight.
	if err := m.Save(); err != nil {
		m.logger.Error("saving alert state failed", "err", err)
	}
	return false
}

// backoff is exponential with jitter: base·2^(n-1), capped, then a random
// value in [d/2, d].
func backoff(base, maxDelay time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	if d > maxDelay {
		d = maxDelay
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}
