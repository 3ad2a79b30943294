package synapse

import (
	"context"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
	"github.com/mxprobe/mxprobe/probes"
)

// delayedWorkers starts the fixture deployment with each server taking
// delay×(i+1) to answer (Synapse renders a big page in tens of ms).
func delayedWorkers(t testing.TB, delay time.Duration) []*synapsereplay.WorkerServer {
	t.Helper()
	specs := append([]synapsereplay.WorkerSpec(nil), synapsereplay.Workers...)
	for i := range specs {
		specs[i].Delay = delay * time.Duration(i+1)
	}
	ss, err := synapsereplay.StartWorkers(specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { synapsereplay.CloseWorkers(ss) })
	return ss
}

func timedRun(t testing.TB, p *Probe) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	r := p.Run(ctx, "")
	d := time.Since(start)
	if r.Outcome == probes.OutcomeSkipped || r.Signals[SigProcessesUp] != float64(len(p.Config.Targets)) {
		t.Fatalf("%s: %s", r.Outcome, r.Error)
	}
	return d
}

// BenchmarkFiveProcesses is "Done when" 6 (concurrency): one run over the
// five processes of the fixture (answering after 10, 20, 30, 40, 50 ms)
// against one run over the slowest alone; five/slowest is the ratio of
// their times.
//
//	go test -run '^$' -bench FiveProcesses ./probes/synapse/
func BenchmarkFiveProcesses(b *testing.B) {
	ss := delayedWorkers(b, 10*time.Millisecond)
	clk := &setClock{t: t0}
	five := workerProbe(b, ss, clk)
	slowest := workerProbe(b, ss[len(ss)-1:], clk)
	defer five.HTTP.CloseIdleConnections()
	defer slowest.HTTP.CloseIdleConnections()
	timedRun(b, five)
	timedRun(b, slowest)
	var tf, ts time.Duration
	n := 0
	for b.Loop() {
		clk.set(clk.now().Add(60 * time.Second))
		ts += timedRun(b, slowest)
		tf += timedRun(b, five)
		n++
	}
	b.ReportMetric(float64(tf.Microseconds())/float64(n)/1000, "ms_five/op")
	b.ReportMetric(float64(ts.Microseconds())/float64(n)/1000, "ms_slowest/op")
	b.ReportMetric(float64(tf)/float64(ts), "five/slowest")
}

// TestFiveProcessesConcurrently: the five scrapes of a run overlap. With
// answers taking 100 to 500 ms, a run over the five takes at least the
// slowest (500 ms) and well under the five scraped one by one (1.5 s plus
// five parses); the bound is relative, so a busy machine or the race
// detector slows both sides. The benchmark gives the figure against the
// slowest alone.
func TestFiveProcessesConcurrently(t *testing.T) {
	ss := delayedWorkers(t, 100*time.Millisecond)
	clk := &setClock{t: t0}
	p := workerProbe(t, ss, clk)
	defer p.HTTP.CloseIdleConnections()
	var singles []*Probe
	for i := range ss {
		sp := workerProbe(t, ss[i:i+1], clk)
		defer sp.HTTP.CloseIdleConnections()
		singles = append(singles, sp)
		timedRun(t, sp)
	}
	timedRun(t, p)
	clk.set(t0.Add(60 * time.Second))
	together := timedRun(t, p)
	var oneByOne time.Duration
	for _, sp := range singles {
		oneByOne += timedRun(t, sp)
	}
	t.Logf("five processes: %s together, %s one by one", together, oneByOne)
	if together < 500*time.Millisecond || together > oneByOne*7/10 {
		t.Errorf("a run over five processes took %s; one by one %s: not concurrent", together, oneByOne)
	}
}
