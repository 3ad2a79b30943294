package probes

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// TestSchedulerUpdateKeepsPhase: Update with an unchanged schedule keeps the
// cron entry and starts nothing but a first run for a tenant the job did not
// have; a changed schedule starts over; a removed tenant or job stops.
func TestSchedulerUpdateKeepsPhase(t *testing.T) {
	var mu sync.Mutex
	runs := map[string]int{}
	var wg sync.WaitGroup
	p := ProberFunc(func(ctx context.Context, tenant string) Result {
		mu.Lock()
		runs[tenant]++
		mu.Unlock()
		wg.Done()
		return NewRecorder("", "", tenant).Finish()
	})
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range runs {
			out[k] = v
		}
		return out
	}
	e := NewEngine(4)
	defer e.Shutdown(time.Second)
	job := func(schedule time.Duration, subjects ...string) *Job {
		return &Job{Name: "j", Schedule: cron.Every(schedule), Timeout: time.Second, Subjects: subjects, Prober: p}
	}
	s := NewScheduler(e, 0) // no jitter: a first round runs at once
	defer s.Stop()
	j1 := job(time.Hour, "a", "b")
	e.SetJobs([]*Job{j1})
	wg.Add(2)
	s.Start([]*Job{j1})
	wg.Wait()
	entry := s.entries["j"]

	// Same schedule, one more tenant: only the newcomer runs now.
	j2 := job(time.Hour, "a", "b", "c")
	e.SetJobs([]*Job{j2})
	wg.Add(1)
	s.Update([]*Job{j2})
	wg.Wait()
	if got := counts(); got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
		t.Fatalf("runs after adding a tenant: %v", got)
	}
	s.mu.Lock()
	same := s.entries["j"] == entry && entry.job == j2
	s.mu.Unlock()
	if !same {
		t.Fatal("an unchanged schedule got a new cron entry")
	}
	// Thirty updates with the same jobs start nothing.
	for range 30 {
		s.Update([]*Job{job(time.Hour, "a", "b", "c")})
	}
	time.Sleep(50 * time.Millisecond) // a wrongly started run would show within this (counted below, not a sync point)
	if got := counts(); got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
		t.Fatalf("runs after 30 unchanged updates: %v", got)
	}

	// A changed schedule starts over: a first round for every tenant.
	j3 := job(2*time.Hour, "a", "c")
	e.SetJobs([]*Job{j3})
	wg.Add(2)
	s.Update([]*Job{j3})
	wg.Wait()
	if got := counts(); got["a"] != 2 || got["b"] != 1 || got["c"] != 2 {
		t.Fatalf("runs after a schedule change: %v", got)
	}
	s.mu.Lock()
	replaced := s.entries["j"] != entry
	s.mu.Unlock()
	if !replaced {
		t.Fatal("a changed schedule kept its old entry")
	}

	// Removed: no entry, and a planned run of the old entry does nothing.
	s.Update(nil)
	s.mu.Lock()
	n := len(s.entries)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d entries after removing every job", n)
	}
	if _, ok := s.current(entry, "a"); ok {
		t.Fatal("a replaced entry still runs")
	}
}
