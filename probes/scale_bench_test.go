package probes_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"
	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/fakehs"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

func BenchmarkScale1000Tenants(b *testing.B) {
	const tenants = 1000
	interval := time.Minute
	if v := os.Getenv("MXPROBE_SCALE_INTERVAL"); v != "" { // shorter for a quick look
		interval, _ = time.ParseDuration(v)
	}
	hs := fakehs.New("localhost")
	defer hs.Close()
	hs.Latency = 2 * time.Millisecond
	syn := testenv.SynapseReplay(b)
	hs.AddUser("peer", "peer-pw", "Peer")
	cfg := &config.Config{Global: config.Global{HomeserverURL: hs.URL, ServerName: "localhost"}}
	subjects := make([]string, tenants)
	for i := range tenants {
		id := fmt.Sprintf("t%04d", i)
		u := fmt.Sprintf("bot%04d", i)
		hs.AddUser(u, "pw-"+u, "Bot "+u)
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, HomeserverURL: hs.URL, ServerName: "localhost",
			Bot: config.Account{Method: config.MethodPassword, User: u, Password: promcfg.Secret("pw-" + u)}})
		subjects[i] = id
	}
	httpc := mxclient.NewHTTPClient()
	defer httpc.CloseIdleConnections()
	mgr := auth.NewManager(httpc)
	minPL := 50
	rt := &matrix.RoundtripProbe{Name: "roundtrip", Manager: mgr, Tenants: cfg.TenantMap(nil), Settings: &matrix.RoundtripSettings{
		Peer:          &config.Account{Method: config.MethodPassword, User: "peer", Password: promcfg.Secret("peer-pw")},
		MinPowerLevel: &minPL, RoomNamePrefix: matrix.DefaultRoomNamePrefix,
		SyncTimeout: config.Duration(10 * time.Second), CleanupTimeout: config.Duration(10 * time.Second),
		SweepMaxAge: config.Duration(time.Hour), SweepInterval: config.Duration(time.Hour),
	}}
	login := &auth.LoginProbe{Name: "login", Manager: mgr, Tenants: cfg.TenantMap(nil)}
	syp := &synapse.Probe{Name: "synapse", HTTP: httpc, Config: &synapse.Settings{URL: syn.URL + "/_synapse/metrics"}}

	b.ResetTimer()
	for range b.N {
		sink := &latenessSink{}
		e := probes.NewEngine(64, sink)
		jobs := []*probes.Job{
			{Name: "login", Type: "login", Schedule: cron.Every(interval), Timeout: 20 * time.Second, Subjects: subjects, Prober: login},
			{Name: "roundtrip", Type: "roundtrip", Schedule: cron.Every(interval), Timeout: 30 * time.Second, Subjects: subjects, Prober: rt},
			{Name: "synapse", Type: "synapse_metrics", Schedule: cron.Every(15 * time.Second), Timeout: 10 * time.Second, Subjects: []string{""}, Prober: syp},
		}
		e.SetJobs(jobs)
		s := probes.NewScheduler(e, 0.9)
		peakG, stop := samplePeakGoroutines()
		// One minute of schedule: the first round of both per-tenant probes
		// (spread over 90% of the interval) and the Synapse scrapes.
		want := int64(2 * tenants)
		cpu0, t0 := cpuTime(), time.Now()
		s.Start(jobs)
		ctx, cancel := context.WithTimeout(context.Background(), interval+60*time.Second)
		for sink.done.Load() < want+int64(interval/(15*time.Second)) && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		elapsed, cpu := time.Since(t0), cpuTime()-cpu0
		s.Stop()
		e.Shutdown(10 * time.Second)
		close(stop)
		n := sink.done.Load()
		if n < want {
			b.Fatalf("only %d of %d runs finished in %s", n, want, elapsed)
		}
		if f := sink.fail.Load(); f > 0 {
			b.Fatalf("%d of %d runs failed", f, n)
		}
		if left := len(hs.JoinedRooms("peer")); left != 0 {
			b.Fatalf("%d probe rooms left behind", left)
		}
		b.ReportMetric(float64(n)/elapsed.Seconds(), "runs/s")
		b.ReportMetric(quantile(sink.late, 0.5)*1000, "p50-lateness-ms")
		b.ReportMetric(quantile(sink.late, 0.99)*1000, "p99-lateness-ms")
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/run")
		b.ReportMetric(peakRSSBytes()/1e6, "peak-RSS-MB")
		b.ReportMetric(float64(peakG.Load()), "peak-goroutines")
	}
}
