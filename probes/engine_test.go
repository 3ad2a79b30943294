package probes

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type collect struct {
	mu  sync.Mutex
	res []Result
}

func (c *collect) Observe(r Result) {
	c.mu.Lock()
	c.res = append(c.res, r)
	c.mu.Unlock()
}

func (c *collect) byOutcome(o Outcome) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.res {
		if r.Outcome == o {
			n++
		}
	}
	return n
}

func job(name string, subjects []string, timeout time.Duration, p Prober) *Job {
	return &Job{Name: name, Type: "test", Schedule: cron.Every(time.Hour), Timeout: timeout, Subjects: subjects, Prober: p}
}

func TestEngineJoinsRunInFlight(t *testing.T) {
	var runs atomic.Int32
	release := make(chan struct{})
	p := ProberFunc(func(ctx context.Context, tenant string) Result {
		runs.Add(1)
		<-release
		rec := NewRecorder("", "", tenant)
		return rec.Finish()
	})
	sink := &collect{}
	e := NewEngine(4, sink)
	defer e.Shutdown(time.Second)
	e.SetJobs([]*Job{job("slow", []string{"a"}, time.Minute, p)})
	var wg sync.WaitGroup
	results := make([]Result, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = e.Run(context.Background(), "slow", "a")
		}()
	}
	// The second caller has joined the run in flight (an explicit sync
	// point, not a guess of how long it takes).
	for e.Joined("slow", "a") < 1 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
	if results[0].Tenant != "a" || results[1].Tenant != "a" || results[0].Started != results[1].Started {
		t.Fatalf("callers got different results: %+v %+v", results[0], results[1])
	}
}

func TestEngineSkipsOverlappingScheduledRun(t *testing.T) {
	release := make(chan struct{})
	p := ProberFunc(func(ctx context.Context, tenant string) Result {
		<-release
		return NewRecorder("", "", tenant).Finish()
	})
	sink := &collect{}
	e := NewEngine(4, sink)
	defer e.Shutdown(time.Second)
	j := job("slow", []string{"a"}, time.Minute, p)
	e.SetJobs([]*Job{j})
	if !e.TryRun(j, "a", time.Now()) {
		t.Fatal("first run not started")
	}
	if e.TryRun(j, "a", time.Now()) {
		t.Fatal("overlapping run started")
	}
	close(release)
	e.Shutdown(5 * time.Second)
	if sink.byOutcome(OutcomeSkipped) != 1 || sink.byOutcome(OutcomeSuccess) != 1 {
		t.Fatalf("results: %+v", sink.res)
	}
}

func TestEngineConcurrencyLimit(t *testing.T) {
	var cur, peak atomic.Int32
	p := ProberFunc(func(ctx context.Context, tenant string) Result {
		n := cur.Add(1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		cur.Add(-1)
		return NewRecorder("", "", tenant).Finish()
	})
	subjects := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	e := NewEngine(3)
	j := job("p", subjects, time.Minute, p)
	e.SetJobs([]*Job{j})
	for _, s := range subjects {
		e.TryRun(j, s, time.Now())
	}
	e.Shutdown(10 * time.Second)
	if peak.Load() != 3 {
		t.Fatalf("peak concurrency %d, want 3", peak.Load())
	}
}

func TestEngineTimeoutPanicAndShutdown(t *testing.T) {
	slow := ProberFunc(func(ctx context.Context, tenant string) Result {
		rec := NewRecorder("", "", tenant)
		_ = rec.Step("wait", func() error {
			<-ctx.Done()
			return ctx.Err()
		})
		return rec.Finish()
	})
	boom := ProberFunc(func(ctx context.Context, tenant string) Result { panic("kaboom") })
	e := NewEngine(2)
	e.SetJobs([]*Job{job("slow", []string{"a"}, 30*time.Millisecond, slow), job("boom", []string{""}, time.Second, boom)})
	r, err := e.Run(context.Background(), "slow", "a")
	if err != nil || r.Outcome != OutcomeFailure || r.Class != ClassTimeout || r.FailedStep != "wait" {
		t.Fatalf("timeout run: %+v %v", r, err)
	}
	r, _ = e.Run(context.Background(), "boom", "")
	if r.Outcome != OutcomeFailure || r.Class != ClassInternal {
		t.Fatalf("panic run: %+v", r)
	}
	if _, err := e.Run(context.Background(), "nope", ""); !errors.Is(err, ErrUnknownProbe) {
		t.Fatalf("unknown probe: %v", err)
	}
	if _, err := e.Run(context.Background(), "slow", "zzz"); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("unknown tenant: %v", err)
	}

	// Shutdown: a run that ignores nothing but its context is cancelled after the grace.
	e2 := NewEngine(2)
	long := job("long", []string{"a"}, time.Hour, slow)
	e2.SetJobs([]*Job{long})
	e2.TryRun(long, "a", time.Now())
	t0 := time.Now()
	e2.Shutdown(50 * time.Millisecond)
	if d := time.Since(t0); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

func TestRecorderSteps(t *testing.T) {
	rec := NewRecorder("p", "t", "x")
	_ = rec.Step("one", func() error { return nil })
	_ = rec.Step("two", func() error { return Errorf(ClassRateLimited, "slow down") })
	_ = rec.Step("three", func() error { return Errorf(ClassHTTP5xx, "later failure") })
	_ = rec.SoftStep("cleanup", func() error { return errors.New("x") })
	r := rec.Finish()
	if r.Outcome != OutcomeWarning || r.Class != ClassRateLimited || r.FailedStep != "two" {
		t.Fatalf("first failure should decide: %+v", r)
	}
	if len(r.Steps) != 4 || r.Steps[3].OK || r.Steps[2].Class != ClassHTTP5xx {
		t.Fatalf("steps: %+v", r.Steps)
	}
}

func TestSchedulerSpreadsAndStops(t *testing.T) {
	var mu sync.Mutex
	started := map[string]time.Time{}
	p := ProberFunc(func(ctx context.Context, tenant string) Result {
		mu.Lock()
		if _, ok := started[tenant]; !ok { // the first round
			started[tenant] = time.Now()
		}
		mu.Unlock()
		return NewRecorder("", "", tenant).Finish()
	})
	var subjects []string
	for _, s := range "abcdefghijklmnopqrst" {
		subjects = append(subjects, string(s))
	}
	sink := &collect{}
	e := NewEngine(8, sink)
	j := &Job{Name: "spread", Schedule: cron.Every(time.Second), Timeout: time.Second, Subjects: subjects, Prober: p}
	e.SetJobs([]*Job{j})
	s := NewScheduler(e, 0.9)
	t0 := time.Now()
	s.Start([]*Job{j})
	// Every tenant's first run (offsets up to 0.9 s into the interval):
	// wait for them, rather than betting they fit in a fixed time.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(started)
		mu.Unlock()
		if n == len(subjects) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Stop()
	e.Shutdown(time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(started) != len(subjects) {
		t.Fatalf("%d tenants started within 30 s, want %d", len(started), len(subjects))
	}
	var first, last time.Duration = time.Hour, 0
	for _, at := range started {
		d := at.Sub(t0)
		first, last = min(first, d), max(last, d)
	}
	// Spread over most of the interval, not all at once.
	if last-first < 300*time.Millisecond {
		t.Fatalf("runs not spread: first %v last %v", first, last)
	}
	for _, r := range sink.res {
		if r.Signals[LatenessKey] > 0.5 {
			t.Fatalf("lateness %v", r.Signals[LatenessKey])
		}
	}
}

func TestOffsetStableAndBounded(t *testing.T) {
	iv := time.Minute
	a := Offset("login", "acme", iv, 0.9)
	if a != Offset("login", "acme", iv, 0.9) || a < 0 || a >= time.Duration(0.9*float64(iv)) {
		t.Fatalf("offset %v", a)
	}
	if Offset("login", "acme", iv, 0) != 0 {
		t.Fatal("no jitter should mean no offset")
	}
}
