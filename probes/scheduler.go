package probes

import (
	"context"
	"hash/fnv"
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
	// Now is the clock, replaceable in tests.
	now func() time.Time
}

// NewScheduler returns a scheduler feeding engine. jitter is the fraction of
// each interval over which tenants are spread (0 starts them all at once).
func NewScheduler(engine *Engine, jitter float64) *Scheduler {
	return &Scheduler{engine: engine, jitter: jitter, now: time.Now}
}

// Start schedules the jobs and dispatches a first round right away, spread
// the same way, so results arrive without waiting a whole interval.
func (s *Scheduler) Start(jobs []*Job) {
	s.mu.Lock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	c := cron.New(cron.WithLocation(time.UTC))
	s.cron = c
	s.mu.Unlock()
	var active []*Job
	for _, j := range jobs {
		if j.Disabled || j.Schedule == nil || len(j.Subjects) == 0 {
			continue
		}
		job := j
		active = append(active, job)
		c.Schedule(job.Schedule, cron.FuncJob(func() { s.dispatch(job, s.now()) }))
	}
	for _, job := range active {
		s.dispatch(job, s.now())
	}
	c.Start()
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

func (s *Scheduler) dispatch(job *Job, fired time.Time) {
	s.mu.Lock()
	ctx := s.ctx
	if ctx == nil {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	interval := job.Schedule.Next(fired).Sub(fired)
	if every, ok := job.Schedule.(cron.ConstantDelaySchedule); ok {
		interval = every.Delay
	}
	plan := make([]plannedRun, len(job.Subjects))
	for i, t := range job.Subjects {
		plan[i] = plannedRun{tenant: t, at: fired.Add(Offset(job.Name, t, interval, s.jitter))}
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
			s.engine.TryRun(job, p.tenant, p.at)
		}
	}()
}
