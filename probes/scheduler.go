package probes

import (
	"context"
	"hash/fnv"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Scheduler triggers jobs on their cron schedules (robfig/cron). When a job
// fires, its tenants are not all started at once: each gets a stable offset
// inside the interval (a hash of probe and tenant, times the jitter fraction),
// so a thousand tenants spread evenly instead of stampeding the homeserver.
type Scheduler struct {
	engine *Engine
	jitter float64

	mu     sync.Mutex
	cron   *cron.Cron
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// entries are the scheduled jobs by name (guarded by mu).
	entries map[string]*schedEntry
	// Now is the clock, replaceable in tests.
	now func() time.Time
}

// NewScheduler returns a scheduler feeding engine. jitter is the fraction of
// each interval over which tenants are spread (0 starts them all at once).
func NewScheduler(engine *Engine, jitter float64) *Scheduler {
	return &Scheduler{engine: engine, jitter: jitter, now: time.Now}
}

// schedEntry is one scheduled job: its cron entry and the job in force (a
// reload with the same schedule swaps the job, keeping the entry's phase).
type schedEntry struct {
	id       cron.EntryID
	schedule cron.Schedule
	job      *Job
	// subjects is job.Subjects as a set: every planned run checks that its
	// tenant is still one (a scan of the list made each round cost
	// tenants², and capped a 25,000-tenant round at ~170 runs/s).
	subjects map[string]struct{}
}

// setJob makes j the entry's job in force (s.mu held).
func (e *schedEntry) setJob(j *Job) {
	e.job = j
	e.subjects = make(map[string]struct{}, len(j.Subjects))
	for _, t := range j.Subjects {
		e.subjects[t] = struct{}{}
	}
}

// MaxWarmup bounds the spread of the first round after Start: every job's
// first runs come within min(interval × jitter, MaxWarmup), tenants spread
// across it, so a restarted daemon is not blind for most of an interval.
// Later rounds keep the full spread.
const MaxWarmup = time.Minute

// Start schedules the jobs and dispatches a first round right away, spread
// over a short warm-up (MaxWarmup), so results arrive without waiting
// a whole interval.
func (s *Scheduler) Start(jobs []*Job) {
	s.mu.Lock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	c := cron.New(cron.WithLocation(time.UTC))
	s.cron = c
	s.entries = map[string]*schedEntry{}
	s.mu.Unlock()
	s.update(jobs, true)
	c.Start()
}

// Update applies a new job list to a started scheduler without losing the
// schedule's phase: a job whose name and schedule are unchanged keeps its
// cron entry and the runs already planned in the current interval (they run
// with the new job), and only tenants it did not have before get a first
// run now; new jobs and jobs whose schedule changed start over as in Start;
// jobs gone (or disabled) stop. So reloading the configuration, however
// often, never delays or skips a run.
func (s *Scheduler) Update(jobs []*Job) { s.update(jobs, false) }

// update is Update; start says the first rounds follow a start (spread
// over the warm-up) rather than a reload (spread over the interval).
func (s *Scheduler) update(jobs []*Job, start bool) {
	s.mu.Lock()
	c := s.cron
	if c == nil {
		s.mu.Unlock()
		return
	}
	type firstRound struct {
		entry    *schedEntry
		subjects []string
	}
	var first []firstRound
	keep := map[string]bool{}
	for _, j := range jobs {
		if j.Disabled || j.Schedule == nil || len(j.Subjects) == 0 {
			continue
		}
		keep[j.Name] = true
		if e := s.entries[j.Name]; e != nil && reflect.DeepEqual(e.schedule, j.Schedule) {
			var added []string
			for _, t := range j.Subjects {
				if _, had := e.subjects[t]; !had {
					added = append(added, t)
				}
			}
			e.setJob(j)
			if len(added) > 0 {
				first = append(first, firstRound{e, added})
			}
			continue
		}
		if e := s.entries[j.Name]; e != nil {
			c.Remove(e.id)
		}
		e := &schedEntry{schedule: j.Schedule}
		e.setJob(j)
		e.id = c.Schedule(j.Schedule, cron.FuncJob(func() { s.dispatch(e, nil, s.now(), false) }))
		s.entries[j.Name] = e
		first = append(first, firstRound{e, nil})
	}
	for name, e := range s.entries {
		if !keep[name] {
			c.Remove(e.id)
			delete(s.entries, name)
		}
	}
	s.mu.Unlock()
	for _, f := range first {
		s.dispatch(f.entry, f.subjects, s.now(), start)
	}
}

// current returns the job of entry in force and whether tenant is still
// one of its subjects (false once the entry was replaced or removed).
func (s *Scheduler) current(e *schedEntry, tenant string) (*Job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[e.job.Name] != e {
		return nil, false
	}
	_, ok := e.subjects[tenant]
	return e.job, ok
}

// Stop stops the schedule and any dispatch in progress; runs already started
// are the engine's to finish.
func (s *Scheduler) Stop() {
	s.mu.Lock()
	c, cancel := s.cron, s.cancel
	s.cron, s.cancel = nil, nil
	s.mu.Unlock()
	if c == nil {
		return
	}
	<-c.Stop().Done()
	cancel()
	s.wg.Wait()
}

// Offset returns the stable start offset of tenant inside interval.
func Offset(probe, tenant string, interval time.Duration, jitter float64) time.Duration {
	if jitter <= 0 || interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(probe))
	h.Write([]byte{0})
	h.Write([]byte(tenant))
	frac := float64(h.Sum64()%1_000_003) / 1_000_003
	return time.Duration(frac * jitter * float64(interval))
}

type plannedRun struct {
	tenant string
	at     time.Time
}

// dispatch plans one round of e's job from fired: for subjects, or all of
// the job's subjects when nil; warmup spreads them over the warm-up instead
// of the interval.
func (s *Scheduler) dispatch(e *schedEntry, subjects []string, fired time.Time, warmup bool) {
	s.mu.Lock()
	ctx := s.ctx
	if ctx == nil {
		s.mu.Unlock()
		return
	}
	job := e.job
	if subjects == nil {
		subjects = job.Subjects
	}
	s.wg.Add(1)
	s.mu.Unlock()

	interval := job.Schedule.Next(fired).Sub(fired)
	if every, ok := job.Schedule.(cron.ConstantDelaySchedule); ok {
		interval = every.Delay
	}
	plan := make([]plannedRun, len(subjects))
	for i, t := range subjects {
		plan[i] = plannedRun{tenant: t, at: fired.Add(s.offset(job, t, interval, warmup))}
	}
	sort.Slice(plan, func(a, b int) bool { return plan[a].at.Before(plan[b].at) })

	go func() {
		defer s.wg.Done()
		timer := time.NewTimer(0)
		defer timer.Stop()
		<-timer.C
		for _, p := range plan {
			if wait := p.at.Sub(s.now()); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			} else if ctx.Err() != nil {
				return
			}
			if cur, ok := s.current(e, p.tenant); ok {
				s.engine.Dispatch(ctx, cur, p.tenant, p.at)
			}
		}
	}()
}

// offset is a run's start offset in its round: the stable spread over the
// interval, or over the warm-up after a start.
func (s *Scheduler) offset(job *Job, tenant string, interval time.Duration, warmup bool) time.Duration {
	if !warmup {
		return Offset(job.Name, tenant, interval, s.jitter)
	}
	warm := WarmupWindow(interval, s.jitter)
	if full := time.Duration(float64(interval) * s.jitter); job.FirstRoundSpread > warm {
		warm = min(job.FirstRoundSpread, full)
	}
	return Offset(job.Name, tenant, warm, 1)
}

// WarmupWindow is the spread of a job's first round after a start:
// min(interval × jitter, MaxWarmup).
func WarmupWindow(interval time.Duration, jitter float64) time.Duration {
	if jitter <= 0 || interval <= 0 {
		return 0
	}
	return min(time.Duration(float64(interval)*jitter), MaxWarmup)
}
