// Package history keeps the latest Results per probe and tenant in memory, for
// the HTTP API, the status page and the CLI. It is a probes.Sink.
package history

import (
	"sort"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// Store keeps the last N Results of every probe and tenant.
type Store struct {
	mu   sync.RWMutex
	size int
	runs map[Key]*ring
	// nextLogin: when the login budget's next slot comes for a probe and
	// tenant whose last run it skipped (until a run measures again).
	nextLogin map[Key]time.Time
}

// Key names a series of runs.
type Key struct{ Probe, Tenant string }

type ring struct {
	buf  []probes.Result
	next int
	full bool
	// lastFailure is kept apart so a long run of successes does not push it out.
	lastFailure *probes.Result
	lastSuccess *probes.Result
}

// New returns a store keeping size runs per probe and tenant.
func New(size int) *Store {
	if size <= 0 {
		size = 60
	}
	return &Store{size: size, runs: map[Key]*ring{}}
}

// Observe implements probes.Sink; skipped runs are not kept, but one the
// login budget skipped leaves when its next login may come.
func (s *Store) Observe(r probes.Result) {
	k := Key{r.Probe, r.Tenant}
	if r.Outcome == probes.OutcomeSkipped {
		if v, ok := r.Signals[probes.SignalNextLoginSeconds]; ok && r.Class == probes.ClassLoginBudget {
			s.mu.Lock()
			if s.nextLogin == nil {
				s.nextLogin = map[Key]time.Time{}
			}
			s.nextLogin[k] = r.Started.Add(r.Duration).Add(time.Duration(v * float64(time.Second)))
			s.mu.Unlock()
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !r.MeasuredNothing() {
		delete(s.nextLogin, k)
	}
	rg := s.runs[k]
	if rg == nil {
		rg = &ring{}
		s.runs[k] = rg
	}
	rg.add(r, s.size)
	rc := r
	if r.OK() {
		rg.lastSuccess = &rc
	} else {
		rg.lastFailure = &rc
	}
}

// Entry is the view of one probe and tenant.
type Entry struct {
	Key
	Latest      probes.Result
	LastSuccess *probes.Result
	LastFailure *probes.Result
	// Recent runs, oldest first.
	Recent []probes.Result
	// NextLogin is when the login budget's next slot comes, when the last
	// run was skipped for it (zero otherwise).
	NextLogin time.Time
}

// Latest returns the newest Result per probe and tenant, sorted by probe then tenant.
func (s *Store) Latest() []probes.Result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]probes.Result, 0, len(s.runs))
	for _, rg := range s.runs {
		out = append(out, rg.latest())
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Probe != out[b].Probe {
			return out[a].Probe < out[b].Probe
		}
		return out[a].Tenant < out[b].Tenant
	})
	return out
}

// Entries returns every probe and tenant with its recent runs.
func (s *Store) Entries() []Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Entry, 0, len(s.runs))
	for k, rg := range s.runs {
		out = append(out, Entry{Key: k, Latest: rg.latest(), LastSuccess: rg.lastSuccess, LastFailure: rg.lastFailure, Recent: rg.ordered(),
			NextLogin: s.nextLogin[k]})
	}
	for k, at := range s.nextLogin {
		if s.runs[k] == nil { // waiting for its first login: no run yet
			out = append(out, Entry{Key: k, NextLogin: at})
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Tenant != out[b].Tenant {
			return out[a].Tenant < out[b].Tenant
		}
		return out[a].Probe < out[b].Probe
	})
	return out
}

// Get returns the entry of one probe and tenant.
func (s *Store) Get(probe, tenant string) (Entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k := Key{probe, tenant}
	rg, ok := s.runs[k]
	if !ok {
		if at, waiting := s.nextLogin[k]; waiting {
			return Entry{Key: k, NextLogin: at}, true
		}
		return Entry{}, false
	}
	return Entry{Key: k, Latest: rg.latest(), LastSuccess: rg.lastSuccess, LastFailure: rg.lastFailure, Recent: rg.ordered(),
		NextLogin: s.nextLogin[k]}, true
}

// SetSize changes how many runs are kept per probe and tenant, keeping the
// newest ones already held.
func (s *Store) SetSize(size int) {
	if size <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if size == s.size {
		return
	}
	s.size = size
	for k, rg := range s.runs {
		old := rg.ordered()
		if len(old) > size {
			old = old[len(old)-size:]
		}
		nr := &ring{buf: old, lastFailure: rg.lastFailure, lastSuccess: rg.lastSuccess}
		nr.next = len(old) % size
		nr.full = len(old) == size
		s.runs[k] = nr
	}
}

// Prune drops the series for which keep is false (after a reload).
func (s *Store) Prune(keep func(Key) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.runs {
		if !keep(k) {
			delete(s.runs, k)
		}
	}
	for k := range s.nextLogin {
		if !keep(k) {
			delete(s.nextLogin, k)
		}
	}
}

// add keeps r as the newest run. The buffer grows with the runs up to size
// (it was allocated whole for every probe and tenant: 60 Results each, 130
// MB for 10,000 tenants before their first minute was over), then wraps.
func (rg *ring) add(r probes.Result, size int) {
	if !rg.full {
		if len(rg.buf) == cap(rg.buf) {
			nb := make([]probes.Result, len(rg.buf), min(size, max(4, 2*cap(rg.buf))))
			copy(nb, rg.buf)
			rg.buf = nb
		}
		rg.buf = append(rg.buf, r)
		rg.next = len(rg.buf) % size
		rg.full = len(rg.buf) == size
		return
	}
	rg.buf[rg.next] = r
	rg.next = (rg.next + 1) % len(rg.buf)
}

func (rg *ring) latest() probes.Result {
	i := rg.next - 1
	if i < 0 {
		i = len(rg.buf) - 1
	}
	return rg.buf[i]
}

func (rg *ring) ordered() []probes.Result {
	if !rg.full {
		return append([]probes.Result(nil), rg.buf[:rg.next]...)
	}
	out := make([]probes.Result, 0, len(rg.buf))
	out = append(out, rg.buf[rg.next:]...)
	return append(out, rg.buf[:rg.next]...)
}
