// Package history keeps the latest Results per probe and tenant in memory, for
// the HTTP API, the status page and the CLI. It is a probes.Sink.
package history

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// Store keeps the last N Results of every probe and tenant.
type Store struct {
	mu   sync.RWMutex
	size int
	// names are the step names and classes of the stored runs.
	names names
	runs  map[Key]*ring
	// nextLogin: when the login budget's next slot comes for a probe and
	// tenant whose last run it skipped (until a run measures again).
	nextLogin map[Key]time.Time
}

// Key names a series of runs.
type Key struct{ Probe, Tenant string }

// ring keeps one probe and tenant's runs: the latest in full, the last
// success and failure without their steps, signals and counts, and the
// recent ones as Runs. Keeping the recent runs in full made 60 Results of
// some 1.5 KB per probe and tenant: 4.5 GB for 25,000 tenants × 2 probes
// once the buffers filled; as Runs they are 4 bytes each.
type ring struct {
	buf    []Run
	next   int
	full   bool
	latest stored
	// lastFailure is kept apart so a long run of successes does not push it out.
	lastFailure *probes.Result
	lastSuccess *probes.Result
}

// Run is what is kept of a recent run for the status page's sparkline:
// its duration and outcome, in 4 bytes (60 of them per probe and tenant
// are 240 bytes; as whole Results they were 90 KB).
type Run uint32

// A Run holds the duration in microseconds in its low 30 bits (up to 17
// minutes, longer runs saturate) and the outcome in its top 2.
const (
	runSuccess = iota
	runWarning
	runFailure

	runDurationBits = 30
	runMaxUS        = 1<<runDurationBits - 1
)

func newRun(r probes.Result) Run {
	o := uint32(runFailure)
	switch r.Outcome {
	case probes.OutcomeSuccess:
		o = runSuccess
	case probes.OutcomeWarning:
		o = runWarning
	}
	us := uint32(min(max(r.Duration.Microseconds(), 0), runMaxUS))
	return Run(o<<runDurationBits | us)
}

func (r Run) outcome() uint32 { return uint32(r) >> runDurationBits }

// Duration is how long the run took (to the microsecond).
func (r Run) Duration() time.Duration { return time.Duration(uint32(r)&runMaxUS) * time.Microsecond }

// Outcome is the run's verdict (skipped runs are not kept).
func (r Run) Outcome() probes.Outcome {
	switch r.outcome() {
	case runSuccess:
		return probes.OutcomeSuccess
	case runWarning:
		return probes.OutcomeWarning
	}
	return probes.OutcomeFailure
}

// OK reports whether the run is not a failure.
func (r Run) OK() bool { return r.outcome() != runFailure }

// stored is a Result as the history keeps its latest run: each step in 16
// bytes (its name and class as indexes into the Store's table of names,
// texts kept apart for the steps that have them), the signals and counts
// as slices rather than maps; some 400 bytes instead of 2.2 KB for a round
// trip's.
type stored struct {
	// head is the run without Steps, Signals, Counts: shared with the
	// ring's lastSuccess or lastFailure, never changed.
	head    *probes.Result
	steps   []storedStep
	texts   []stepText
	signals []signal
	counts  []count
}

type storedStep struct {
	duration    time.Duration
	name, class uint16 // indexes into names.list
	status      uint16
	ok          bool
}

// stepText is what step i has beyond its storedStep: its error and detail,
// and its name, class and status where they do not fit.
type stepText struct {
	i                          int
	name, class, error, detail string
	status                     int
	own                        bool // name, class and status are here
}

type signal struct {
	name string
	v    float64
}

type count struct {
	name string
	n    int
}

// names interns step names and failure classes: a bounded set (each probe
// type's own), stored once however many runs use them.
type names struct {
	list []string
	idx  map[string]uint16
}

// index returns s's index, or false when the table is full.
func (n *names) index(s string) (uint16, bool) {
	if i, ok := n.idx[s]; ok {
		return i, true
	}
	if len(n.list) >= math.MaxUint16 {
		return 0, false
	}
	if n.idx == nil {
		n.idx = map[string]uint16{}
	}
	i := uint16(len(n.list))
	n.list = append(n.list, s)
	n.idx[s] = i
	return i, true
}

// store compacts r (the Store's lock held).
func (s *Store) store(r probes.Result) stored {
	st := stored{head: summary(r), steps: make([]storedStep, len(r.Steps))}
	for i, step := range r.Steps {
		name, ok1 := s.names.index(step.Name)
		class, ok2 := s.names.index(string(step.Class))
		own := !ok1 || !ok2 || step.Status < 0 || step.Status > math.MaxUint16
		if !own {
			st.steps[i] = storedStep{duration: step.Duration, name: name, class: class, status: uint16(step.Status), ok: step.OK}
		} else {
			st.steps[i] = storedStep{duration: step.Duration, ok: step.OK}
		}
		if own || step.Error != "" || step.Detail != "" {
			t := stepText{i: i, error: step.Error, detail: step.Detail, own: own}
			if own {
				t.name, t.class, t.status = step.Name, string(step.Class), step.Status
			}
			st.texts = append(st.texts, t)
		}
	}
	if len(r.Signals) > 0 {
		st.signals = make([]signal, 0, len(r.Signals))
		for k, v := range r.Signals {
			st.signals = append(st.signals, signal{k, v})
		}
	}
	if len(r.Counts) > 0 {
		st.counts = make([]count, 0, len(r.Counts))
		for k, n := range r.Counts {
			st.counts = append(st.counts, count{k, n})
		}
	}
	return st
}

// result is a stored run as a Result again (the Store's lock held).
func (s *Store) result(st stored) probes.Result {
	r := *st.head
	if st.steps != nil {
		r.Steps = make([]probes.Step, len(st.steps))
		for i, step := range st.steps {
			r.Steps[i] = probes.Step{Name: s.names.list[step.name], Class: probes.Class(s.names.list[step.class]),
				Duration: step.duration, Status: int(step.status), OK: step.ok}
		}
		for _, t := range st.texts {
			r.Steps[t.i].Error, r.Steps[t.i].Detail = t.error, t.detail
			if t.own {
				r.Steps[t.i].Name, r.Steps[t.i].Class, r.Steps[t.i].Status = t.name, probes.Class(t.class), t.status
			}
		}
	}
	if st.signals != nil {
		r.Signals = make(map[string]float64, len(st.signals))
		for _, sg := range st.signals {
			r.Signals[sg.name] = sg.v
		}
	}
	if st.counts != nil {
		r.Counts = make(map[string]int, len(st.counts))
		for _, c := range st.counts {
			r.Counts[c.name] = c.n
		}
	}
	return r
}

// summary is r without its steps, signals and counts (what the last
// success and failure are shown with).
func summary(r probes.Result) *probes.Result {
	r.Steps, r.Signals, r.Counts = nil, nil, nil
	return &r
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
	rg.latest = s.store(r)
	rg.add(r, s.size)
	if r.OK() {
		rg.lastSuccess = rg.latest.head
	} else {
		rg.lastFailure = rg.latest.head
	}
}

// Entry is the view of one probe and tenant.
type Entry struct {
	Key
	// Latest is the newest run in full; LastSuccess and LastFailure are
	// without steps, signals and counts.
	Latest      probes.Result
	LastSuccess *probes.Result
	LastFailure *probes.Result
	// Recent runs, oldest first (the newest is Latest).
	Recent []Run
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
		out = append(out, s.result(rg.latest))
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
		out = append(out, Entry{Key: k, Latest: s.result(rg.latest), LastSuccess: rg.lastSuccess, LastFailure: rg.lastFailure, Recent: rg.ordered(),
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
	return Entry{Key: k, Latest: s.result(rg.latest), LastSuccess: rg.lastSuccess, LastFailure: rg.lastFailure, Recent: rg.ordered(),
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
		nr := &ring{buf: old, latest: rg.latest, lastFailure: rg.lastFailure, lastSuccess: rg.lastSuccess}
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
// (allocated whole, it cost every probe and tenant its full size before
// their first minute was over), then wraps.
func (rg *ring) add(r probes.Result, size int) {
	run := newRun(r)
	if !rg.full {
		if len(rg.buf) == cap(rg.buf) {
			nb := make([]Run, len(rg.buf), min(size, max(4, 2*cap(rg.buf))))
			copy(nb, rg.buf)
			rg.buf = nb
		}
		rg.buf = append(rg.buf, run)
		rg.next = len(rg.buf) % size
		rg.full = len(rg.buf) == size
		return
	}
	rg.buf[rg.next] = run
	rg.next = (rg.next + 1) % len(rg.buf)
}

func (rg *ring) ordered() []Run {
	if !rg.full {
		return append([]Run(nil), rg.buf[:rg.next]...)
	}
	out := make([]Run, 0, len(rg.buf))
	out = append(out, rg.buf[rg.next:]...)
	return append(out, rg.buf[:rg.next]...)
}
