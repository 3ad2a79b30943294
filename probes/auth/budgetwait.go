package auth

import (
	"context"
	"sort"
	"time"
)

// StepLoginBudgetWait is the timed step of a run that waited for the login
// budget's next free slot before its full login.
const StepLoginBudgetWait = "login_budget_wait"

// maxLoginReserve is the most of a run's time kept for the login itself
// after its slot; a run keeps a third of its time when that is less.
const maxLoginReserve = 10 * time.Second

// queued is an account waiting for a slot.
type queued struct {
	first bool // no session: served before re-logins
	since time.Time
	seq   uint64
}

// position is key's place in the queue, 0 first (mu held): accounts
// without a session first, then the longest waiting.
func (b *Budget) position(key string) int {
	type entry struct {
		key string
		q   queued
	}
	all := make([]entry, 0, len(b.queue))
	for k, q := range b.queue {
		all = append(all, entry{k, q})
	}
	sort.Slice(all, func(i, j int) bool {
		a, c := all[i].q, all[j].q
		if a.first != c.first {
			return a.first
		}
		if !a.since.Equal(c.since) {
			return a.since.Before(c.since)
		}
		return a.seq < c.seq
	})
	for i, e := range all {
		if e.key == key {
			return i
		}
	}
	return len(all)
}

func (b *Budget) after(d time.Duration) (<-chan time.Time, func()) {
	if b.After != nil {
		return b.After(d), func() {}
	}
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// Wait spends one login for key, waiting for the budget's next free slot
// when that slot comes before ctx's deadline (less the time the login
// itself needs): in order, accounts without a session (first) before
// re-logins, then the longest waiting. It returns how long it waited and
// whether a login was spent; when not, next is how long until the account's
// slot would have come. Without a deadline it does not wait.
func (b *Budget) Wait(ctx context.Context, key string, first bool) (waited time.Duration, ok bool, next time.Duration) {
	if b == nil || b.Max <= 0 {
		return 0, true, 0
	}
	b.mu.Lock()
	start := b.now()
	// The deadline on the budget's clock: the run's remaining time, less
	// the login's reserve.
	var limit time.Time
	if dl, has := ctx.Deadline(); has {
		left := time.Until(dl)
		limit = start.Add(left - min(maxLoginReserve, left/3))
	}
	if b.queue == nil {
		b.queue = map[string]queued{}
	}
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	b.seq++
	b.queue[key] = queued{first: first, since: start, seq: b.seq}
	defer func() {
		delete(b.queue, key)
		b.broadcast()
		b.mu.Unlock()
	}()
	parked := false // waited for a slot (not merely for the lock)
	for {
		now := b.now()
		pos := b.position(key)
		wait := b.slotsLocked(pos+1, now)
		if wait <= 0 {
			if took, _ := b.takeLocked(); took {
				if !parked {
					return 0, true, 0
				}
				return now.Sub(start), true, 0
			}
			wait = b.slotsLocked(pos+1, now)
		}
		if limit.IsZero() || now.Add(wait).After(limit) || ctx.Err() != nil {
			return now.Sub(start), false, wait
		}
		parked = true
		wake := b.wake
		timer, stop := b.after(wait)
		b.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-timer:
		case <-wake:
		}
		stop()
		b.mu.Lock()
	}
}

// Queued is how many accounts wait for a slot now.
func (b *Budget) Queued() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}
