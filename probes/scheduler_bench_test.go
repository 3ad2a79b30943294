package probes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// fakeLoginServer answers m.login.password and whoami like a homeserver.
func fakeLoginServer() *httptest.Server {
	var n atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_matrix/client/v3/login", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Identifier struct {
				User string `json:"user"`
			} `json:"identifier"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		tok := "tok-" + strconv.FormatInt(n.Add(1), 10) + "-" + req.Identifier.User
		fmt.Fprintf(w, `{"user_id":"@%s:bench.local","access_token":%q,"device_id":"D"}`, req.Identifier.User, tok)
	})
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		user := tok[strings.LastIndex(tok, "-")+1:]
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"user_id":"@%s:bench.local","device_id":"D"}`, user)
	})
	return httptest.NewServer(mux)
}

type latenessSink struct {
	mu   sync.Mutex
	late []float64
	done atomic.Int64
	fail atomic.Int64
}

func (s *latenessSink) Observe(r probes.Result) {
	if r.Outcome == probes.OutcomeSkipped {
		return
	}
	if !r.OK() {
		s.fail.Add(1)
	}
	s.mu.Lock()
	s.late = append(s.late, r.Signals[probes.LatenessKey])
	s.mu.Unlock()
	s.done.Add(1)
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[int(q*float64(len(s)-1))]
}

func peakRSSBytes() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb * 1024
		}
	}
	return 0
}

// samplePeakGoroutines records the highest goroutine count, sampled every
// 100 ms, until stop is closed.
func samplePeakGoroutines() (peak *atomic.Int64, stop chan struct{}) {
	peak, stop = &atomic.Int64{}, make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if g := int64(runtime.NumGoroutine()); g > peak.Load() {
					peak.Store(g)
				}
			}
		}
	}()
	return peak, stop
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScheduler1000Tenants schedules a login probe (password login +
// whoami, the real probe code) for 1,000 tenants against an in-process
// homeserver stand-in and measures one full scheduling round: schedule
// lateness, runs per second, CPU per run, peak RSS and goroutines. The
// interval sub-benchmarks are the target (1m) and a 6× harder one (10s).
func BenchmarkScheduler1000Tenants(b *testing.B) {
	for _, iv := range []time.Duration{time.Minute, 10 * time.Second} {
		b.Run("interval="+iv.String(), func(b *testing.B) { benchScheduler(b, 1000, iv) })
	}
}

func benchScheduler(b *testing.B, tenants int, interval time.Duration) {
	srv := fakeLoginServer()
	defer srv.Close()
	yaml := fmt.Sprintf("global:\n  homeserver_url: %s\n  server_name: bench.local\ntenants:\n", srv.URL)
	var sb strings.Builder
	sb.WriteString(yaml)
	for i := range tenants {
		fmt.Fprintf(&sb, "  - id: t%04d\n    bot: {user: bot%04d, password: pw}\n", i, i)
	}
	cfg, err := config.Parse([]byte(sb.String()), "bench.yml", func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	m := auth.NewManager(mxclient.NewHTTPClient())
	login := &auth.LoginProbe{Name: "login", Manager: m, Tenants: cfg.TenantMap(nil)}
	subjects := make([]string, tenants)
	for i := range subjects {
		subjects[i] = cfg.Tenants[i].ID
	}
	b.ResetTimer()
	for range b.N {
		sink := &latenessSink{}
		e := probes.NewEngine(32, sink)
		job := &probes.Job{Name: "login", Type: "login", Schedule: cron.Every(interval), Timeout: 10 * time.Second, Subjects: subjects, Prober: login}
		e.SetJobs([]*probes.Job{job})
		s := probes.NewScheduler(e, 0.9)
		peakG, stop := samplePeakGoroutines()
		cpu0, t0 := cpuTime(), time.Now()
		s.Start([]*probes.Job{job})
		ctx, cancel := context.WithTimeout(context.Background(), interval+30*time.Second)
		for sink.done.Load() < int64(tenants) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		elapsed, cpu := time.Since(t0), cpuTime()-cpu0
		s.Stop()
		e.Shutdown(5 * time.Second)
		close(stop)
		if n := sink.done.Load(); n < int64(tenants) {
			b.Fatalf("only %d of %d runs finished", n, tenants)
		}
		if f := sink.fail.Load(); f > 0 {
			b.Fatalf("%d runs failed", f)
		}
		b.ReportMetric(quantile(sink.late, 0.5)*1000, "p50-lateness-ms")
		b.ReportMetric(quantile(sink.late, 0.99)*1000, "p99-lateness-ms")
		b.ReportMetric(float64(tenants)/elapsed.Seconds(), "runs/s")
		b.ReportMetric(float64(cpu.Microseconds())/float64(tenants), "cpu-µs/run")
		b.ReportMetric(peakRSSBytes()/1e6, "peak-RSS-MB")
		b.ReportMetric(float64(peakG.Load()), "peak-goroutines")
	}
}
