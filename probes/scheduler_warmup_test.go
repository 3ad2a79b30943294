package probes

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// jumpClock reads t0 on its first call (when a round is planned) and t0 +
// jump afterwards (when the round's runs wait for their time), so runs
// planned within jump of the round's start are due at once and the others
// wait a real interval: which runs start tells how the round was spread,
// without a wall-clock bet.
type jumpClock struct {
	mu    sync.Mutex
	t0    time.Time
	jump  time.Duration
	calls int
}

func (c *jumpClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.calls == 1 {
		return c.t0
	}
	return c.t0.Add(c.jump)
}

func (c *jumpClock) reset() { c.mu.Lock(); c.calls = 0; c.mu.Unlock() }

// Issue 22, item 4: after a start every job's first round comes within the
// warm-up (min(interval × jitter, 60 s)), tenants spread across it; a job
// added by a reload keeps the full spread over its interval.
func TestFirstRoundWithinWarmup(t *testing.T) {
	const interval = time.Hour
	const jitter = 0.9
	var tenants []string
	for i := range 20 {
		tenants = append(tenants, fmt.Sprintf("t%02d", i))
	}
	var mu sync.Mutex
	ran := map[string][]string{}
	var wg sync.WaitGroup
	prober := func(job string) Prober {
		return ProberFunc(func(ctx context.Context, tenant string) Result {
			mu.Lock()
			ran[job] = append(ran[job], tenant)
			mu.Unlock()
			wg.Done()
			return NewRecorder("", "", tenant).Finish()
		})
	}
	e := NewEngine(4)
	defer e.Shutdown(time.Second)
	clk := &jumpClock{t0: time.Unix(1_800_000_000, 0), jump: MaxWarmup}
	s := NewScheduler(e, jitter)
	s.now = clk.now
	defer s.Stop()

	// The warm-up offsets spread over (0, 60 s], not all at once.
	var latest time.Duration
	for _, tn := range tenants {
		latest = max(latest, s.offset(&Job{Name: "start"}, tn, interval, true))
	}
	if latest > MaxWarmup || latest < MaxWarmup/2 {
		t.Fatalf("latest warm-up offset %s: want the tenants spread over the %s warm-up", latest, MaxWarmup)
	}

	// A job whose shared accounts need a longer first round gets it, up to
	// the full spread.
	for spread, want := range map[time.Duration]time.Duration{10 * time.Minute: 10 * time.Minute, 2 * time.Hour: time.Duration(jitter * float64(interval))} {
		var longest time.Duration
		for _, tn := range tenants {
			longest = max(longest, s.offset(&Job{Name: "shared", FirstRoundSpread: spread}, tn, interval, true))
		}
		if longest > want || longest < want/2 {
			t.Errorf("first-round spread %s: latest offset %s, want within %s", spread, longest, want)
		}
	}

	start := &Job{Name: "start", Schedule: cron.Every(interval), Timeout: time.Second, Subjects: tenants, Prober: prober("start")}
	e.SetJobs([]*Job{start})
	wg.Add(len(tenants))
	s.Start([]*Job{start})
	wg.Wait() // every tenant's first run, within the warm-up

	// A reload adds a job: its first round keeps the full spread, so only
	// the tenants planned within the first minute of the hour run now.
	var due []string
	for _, tn := range tenants {
		if Offset("reloaded", tn, interval, jitter) <= MaxWarmup {
			due = append(due, tn)
		}
	}
	if len(due) == len(tenants) {
		t.Fatal("the test cannot tell the spreads apart: every tenant is due within the warm-up")
	}
	reloaded := &Job{Name: "reloaded", Schedule: cron.Every(interval), Timeout: time.Second, Subjects: tenants, Prober: prober("reloaded")}
	e.SetJobs([]*Job{start, reloaded})
	clk.reset()
	wg.Add(len(due))
	s.Update([]*Job{start, reloaded})
	wg.Wait()
	mu.Lock()
	got := append([]string(nil), ran["reloaded"]...)
	mu.Unlock()
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(due) {
		t.Fatalf("after the reload ran %v, want only %v (the full spread)", got, due)
	}
}
