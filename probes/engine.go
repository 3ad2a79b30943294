package probes

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Prober runs one probe for one subject: a tenant id, or "" for probes that
// watch the deployment as a whole.
type Prober interface {
	Run(ctx context.Context, tenant string) Result
}

// DeclaredCounts is implemented by probers that say up front which
// Result.Counts keys their runs can report for each subject
// (CountTokenRefresh, CountCleanupFailure, CountRateLimited + ":" + step),
// so that exporters start those counters at 0 before the first event.
type DeclaredCounts interface {
	DeclaredCounts() []string
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context, tenant string) Result

// Run implements Prober.
func (f ProberFunc) Run(ctx context.Context, tenant string) Result { return f(ctx, tenant) }

// Job is a configured probe ready to run.
type Job struct {
	Name     string
	Type     string
	Schedule cron.Schedule
	Timeout  time.Duration
	// Subjects are the tenants the job runs for, or [""] for a global probe.
	Subjects []string
	// Disabled jobs run on demand only.
	Disabled bool
	// FirstRoundSpread is the shortest spread of the job's first round
	// after a start (accounts several subjects share must stay within
	// their rate limits' bursts); the scheduler's warm-up is never shorter,
	// and never longer than the job's full spread.
	FirstRoundSpread time.Duration
	Prober           Prober
}

// Interval is the job's scheduled interval (0 when it has no schedule):
// the delay of an @every schedule, else the time between its next two
// firings.
func (j *Job) Interval() time.Duration {
	switch s := j.Schedule.(type) {
	case nil:
		return 0
	case cron.ConstantDelaySchedule:
		return s.Delay
	default:
		next := s.Next(time.Now())
		return s.Next(next).Sub(next)
	}
}

// Sink receives every Result: exporters, alerts and history.
type Sink interface {
	Observe(Result)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Result)

// Observe implements Sink.
func (f SinkFunc) Observe(r Result) { f(r) }

// ErrUnknownProbe and ErrUnknownTenant are returned for runs of things that
// are not configured. ErrUnknownSilence is what the alert engine returns
// (wrapped or not) for a silence id it does not know, and what the web API
// answers 404 for: it lives here because package probes is the one both
// alerts and exporters/web may import (internal/archtest).
// They are constants, so no package can reassign them.
const (
	ErrUnknownProbe   = ConstError("unknown probe")
	ErrUnknownTenant  = ConstError("unknown tenant")
	ErrUnknownSilence = ConstError("unknown silence")
)

// ConstError is an error that can be a constant: a sentinel compared with
// errors.Is, which no package can reassign.
type ConstError string

func (e ConstError) Error() string { return string(e) }

// Engine runs jobs under a global concurrency limit, never two runs of the
// same probe and tenant at once, and hands every Result to the sinks. It is
// used by the scheduler, the CLI and the HTTP API alike.
type Engine struct {
	sem   chan struct{}
	sinks []Sink

	mu       sync.Mutex
	jobs     map[string]*Job
	inflight map[string]*call
	root     context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	// closed: Shutdown began; no run starts any more (so no wg.Add races
	// with its wg.Wait).
	closed bool
}

type call struct {
	done   chan struct{}
	res    Result
	joined int // callers that joined the run in flight (under Engine.mu)
}

// Joined is how many callers joined the run of probe and tenant now in
// flight (0 when none runs): a sync point for tests and diagnostics.
func (e *Engine) Joined(probe, tenant string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.inflight[probe+"\x00"+tenant]; ok {
		return c.joined
	}
	return 0
}

// NewEngine returns an engine allowing concurrency runs at once.
func NewEngine(concurrency int, sinks ...Sink) *Engine {
	if concurrency <= 0 {
		concurrency = 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{
		sem:      make(chan struct{}, concurrency),
		sinks:    sinks,
		jobs:     map[string]*Job{},
		inflight: map[string]*call{},
		root:     ctx,
		cancel:   cancel,
	}
}

// SetJobs replaces the configured jobs (on start and reload). Runs in flight
// finish with the job they started with.
func (e *Engine) SetJobs(jobs []*Job) {
	m := make(map[string]*Job, len(jobs))
	for _, j := range jobs {
		m[j.Name] = j
	}
	e.mu.Lock()
	e.jobs = m
	e.mu.Unlock()
}

// SetConcurrency changes the limit for runs that start from now on.
func (e *Engine) SetConcurrency(n int) {
	if n <= 0 {
		n = 1
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if cap(e.sem) != n {
		e.sem = make(chan struct{}, n)
	}
}

// Jobs returns the configured jobs sorted by name.
func (e *Engine) Jobs() []*Job {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Job, 0, len(e.jobs))
	for _, j := range e.jobs {
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Job returns a job by name.
func (e *Engine) Job(name string) (*Job, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[name]
	return j, ok
}

// Lookup checks that probe and tenant are configured together.
func (e *Engine) Lookup(probe, tenant string) (*Job, error) {
	j, ok := e.Job(probe)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownProbe, probe)
	}
	for _, s := range j.Subjects {
		if s == tenant {
			return j, nil
		}
	}
	if len(j.Subjects) == 1 && j.Subjects[0] == "" {
		if tenant == "" {
			return j, nil
		}
		return nil, fmt.Errorf("%w %q: probe %q is not per tenant", ErrUnknownTenant, tenant, probe)
	}
	return nil, fmt.Errorf("%w %q for probe %q", ErrUnknownTenant, tenant, probe)
}

// Run runs probe for tenant now and returns its Result. If a run of the same
// probe and tenant is already in flight, Run waits for it and returns its
// Result instead of starting another.
func (e *Engine) Run(ctx context.Context, probe, tenant string) (Result, error) {
	job, err := e.Lookup(probe, tenant)
	if err != nil {
		return Result{}, err
	}
	c, _ := e.start(job, tenant, time.Time{}) // joins a run already in flight
	select {
	case <-c.done:
		return c.res, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// TryRun starts a scheduled run unless one of the same probe and tenant is in
// flight, in which case the run is skipped (reported to sinks as skipped)
// rather than stacked. planned is when the schedule wanted the run.
func (e *Engine) TryRun(job *Job, tenant string, planned time.Time) (started bool) {
	key := job.Name + "\x00" + tenant
	e.mu.Lock()
	_, busy := e.inflight[key]
	e.mu.Unlock()
	if busy {
		e.publish(Result{Probe: job.Name, Type: job.Type, Tenant: tenant, Outcome: OutcomeSkipped, Started: time.Now()})
		return false
	}
	_, started = e.start(job, tenant, planned)
	return started
}

// Dispatch is TryRun for the scheduler: it waits here, in the caller, for
// a slot of the concurrency limit (or ctx's end) before starting the run.
// A run that waited for its slot in a goroutine of its own cost a goroutine
// and its memory per waiting run: one replica with 25,000 tenants behind
// its schedule held 50,000 of them and 2 GB. Waiting in the scheduler
// bounds that to the slots in use; a run that starts late says so in its
// schedule lateness.
func (e *Engine) Dispatch(ctx context.Context, job *Job, tenant string, planned time.Time) (started bool) {
	key := job.Name + "\x00" + tenant
	e.mu.Lock()
	_, busy := e.inflight[key]
	sem, root := e.sem, e.root
	e.mu.Unlock()
	if busy {
		e.publish(Result{Probe: job.Name, Type: job.Type, Tenant: tenant, Outcome: OutcomeSkipped, Started: time.Now()})
		return false
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return false
	case <-root.Done():
		return false
	}
	_, started = e.startHeld(job, tenant, planned, sem)
	if !started {
		<-sem
	}
	return started
}

func (e *Engine) start(job *Job, tenant string, planned time.Time) (*call, bool) {
	return e.startHeld(job, tenant, planned, nil)
}

// startHeld starts a run; held is the semaphore whose slot the caller
// already took for it (nil: the run takes one of the current semaphore).
// When it returns false the caller keeps (and gives back) its slot.
func (e *Engine) startHeld(job *Job, tenant string, planned time.Time, held chan struct{}) (*call, bool) {
	key := job.Name + "\x00" + tenant
	e.mu.Lock()
	if c, ok := e.inflight[key]; ok {
		c.joined++
		e.mu.Unlock()
		return c, false
	}
	if e.closed {
		e.mu.Unlock()
		c := &call{done: make(chan struct{}), res: Result{Probe: job.Name, Type: job.Type, Tenant: tenant,
			Outcome: OutcomeSkipped, Started: time.Now()}}
		close(c.done)
		return c, false
	}
	c := &call{done: make(chan struct{})}
	e.inflight[key] = c
	sem, root := e.sem, e.root
	if held != nil {
		sem = held
	}
	e.wg.Add(1)
	e.mu.Unlock()

	go func() {
		defer e.wg.Done()
		res := e.execute(root, sem, job, tenant, planned, held != nil)
		// Sinks see the Result before callers of Run get it, so a caller
		// that reads history or metrics right after finds its run there.
		e.publish(res)
		e.mu.Lock()
		delete(e.inflight, key)
		e.mu.Unlock()
		c.res = res
		close(c.done)
	}()
	return c, true
}

// LatenessKey is the Result.Signals key carrying how late a scheduled run
// started against its plan, in seconds.
const LatenessKey = "schedule_lateness_seconds"

func (e *Engine) execute(root context.Context, sem chan struct{}, job *Job, tenant string, planned time.Time, held bool) (res Result) {
	if !held {
		select {
		case sem <- struct{}{}:
		case <-root.Done():
			return Result{Probe: job.Name, Type: job.Type, Tenant: tenant, Outcome: OutcomeSkipped, Started: time.Now()}
		}
	}
	defer func() { <-sem }()
	lateness := time.Duration(0)
	if !planned.IsZero() {
		lateness = time.Since(planned)
	}
	ctx, cancel := context.WithTimeout(root, job.Timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			res = Result{Probe: job.Name, Type: job.Type, Tenant: tenant, Outcome: OutcomeFailure,
				Class: ClassInternal, Error: fmt.Sprintf("probe panicked: %v", p), Started: time.Now(), Steps: []Step{}}
		}
		if !planned.IsZero() {
			res.SetSignal(LatenessKey, lateness.Seconds())
		}
	}()
	res = job.Prober.Run(ctx, tenant)
	res.BoundText()
	res.Probe, res.Type, res.Tenant = job.Name, job.Type, tenant
	if res.Outcome == "" {
		res.Outcome = OutcomeSuccess
	}
	if res.Outcome == OutcomeFailure && ctx.Err() != nil && res.Class != ClassTimeout &&
		errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res.Class = ClassTimeout
	}
	if res.Outcome == OutcomeFailure && root.Err() != nil {
		res.Class = ClassCancelled
	}
	return res
}

func (e *Engine) publish(r Result) {
	for _, s := range e.sinks {
		s.Observe(r)
	}
}

// InFlight returns how many runs are in flight.
func (e *Engine) InFlight() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.inflight)
}

// Shutdown waits up to grace for runs in flight, then cancels them and waits
// for them to return.
func (e *Engine) Shutdown(grace time.Duration) {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	e.cancel()
	<-done
}
