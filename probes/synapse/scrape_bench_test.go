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

// TestFiveProcessesConcurrently: the five scrapes overlap. With answers
// taking 100 to 500 ms (1.5 s in sequence), a run takes well under the sum
// (the bound leaves room for a busy machine; the benchmark gives the
// figure against the slowest alone).
func TestFiveProcessesConcurrently(t *testing.T) {
	ss := delayedWorkers(t, 100*time.Millisecond)
	clk := &setClock{t: t0}
	p := workerProbe(t, ss, clk)
	defer p.HTTP.CloseIdleConnections()
	timedRun(t, p)
	clk.set(t0.Add(60 * time.Second))
	if d := timedRun(t, p); d >= 1200*time.Millisecond || d < 500*time.Millisecond {
		t.Errorf("a run over five processes took %s: want between the slowest (500ms) and well under the sum (1.5s)", d)
	}
}
