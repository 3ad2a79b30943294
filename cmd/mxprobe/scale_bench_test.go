package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// BenchmarkScale25000Tenants is one replica at the size of the largest
// platforms: `mxprobe serve` (the binary, as deployed) with 25,000 tenants,
// a login and a room round trip per tenant every minute and a Synapse scrape
// every 15 s, against the homeserver stand-in in a process of its own
// (internal/tools/standin), so that CPU, RSS and goroutines are mxprobe's
// alone. /metrics is scraped every 15 s as Prometheus would. It reports the
// schedule lateness (p50/p99, from mxprobe_scheduler_lateness_seconds),
// mxprobe's CPU per run, its peak RSS (VmHWM), its peak goroutines, and the
// time and size of a /metrics scrape at that size; it fails on any failed
// run or room left behind, a p99 lateness of 1 s or more, or (at 25,000
// tenants or more) a peak RSS of 150 MB or more.
//
// MXPROBE_SCALE_TENANTS and MXPROBE_SCALE_INTERVAL shrink it for a quick
// look (for example 2000 and 20s).
func BenchmarkScale25000Tenants(b *testing.B) {
	tenants := 25000
	if v := os.Getenv("MXPROBE_SCALE_TENANTS"); v != "" {
		tenants, _ = strconv.Atoi(v)
	}
	interval := time.Minute
	if v := os.Getenv("MXPROBE_SCALE_INTERVAL"); v != "" {
		interval, _ = time.ParseDuration(v)
	}
	bin := testenv.BuildMxprobe(b)
	si := testenv.StartStandin(b, tenants, 1)
	dir := b.TempDir()
	tenantCfg := make([]map[string]any, tenants)
	for i := range tenants {
		user := testenv.StandinUser(i)
		tenantCfg[i] = map[string]any{"id": fmt.Sprintf("t%06d", i), "bot": map[string]any{"method": "password", "user": user, "password": "pw-" + user}}
	}
	every := "@every " + interval.String()
	cfg := map[string]any{
		"global": map[string]any{"homeserver_url": si.URLs[0], "server_name": "localhost", "concurrency": 64,
			"data_dir": filepath.Join(dir, "data")},
		"synapse_limits": map[string]any{"disabled": true},
		"tenants":        tenantCfg,
		"probes": []map[string]any{
			{"name": "login", "type": "login", "schedule": every, "timeout": "20s"},
			{"name": "roundtrip", "type": "roundtrip", "schedule": every, "timeout": "30s",
				"roundtrip": map[string]any{"peer": map[string]any{"method": "password", "user": "peer", "password": "peer-pw"}}},
			{"name": "synapse", "type": "synapse_metrics", "schedule": "@every 15s", "timeout": "10s",
				"synapse": map[string]any{"url": si.URLs[0] + "/_synapse/metrics"}},
		},
	}
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	y, err := yaml.Marshal(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, y, 0o600); err != nil {
		b.Fatal(err)
	}

	for b.Loop() {
		r := runScale(b, bin, cfgPath, tenants, interval, si)
		b.ReportMetric(r.p50*1000, "p50-lateness-ms")
		b.ReportMetric(r.p99*1000, "p99-lateness-ms")
		b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.runs), "cpu-µs/run")
		b.ReportMetric(float64(r.peakRSS)/1e6, "peak-RSS-MB")
		b.ReportMetric(float64(r.peakGoroutines), "peak-goroutines")
		b.ReportMetric(float64(r.scrape.Microseconds())/1000, "metrics-scrape-ms")
		b.ReportMetric(float64(r.scrapeBytes)/1e6, "metrics-MB")
		b.ReportMetric(float64(r.runs), "runs")
		b.ReportMetric(float64(r.standinCPU.Microseconds())/float64(r.runs), "standin-cpu-µs/run")
	}
}

type scaleResult struct {
	runs, failures          int
	p50, p99                float64
	cpu, standinCPU         time.Duration
	peakRSS                 int64
	peakGoroutines          int
	scrape                  time.Duration
	scrapeBytes             int
	elapsed                 time.Duration
	login, roundtrip, synap int
}

func runScale(b *testing.B, bin, cfgPath string, tenants int, interval time.Duration, si *testenv.Standin) scaleResult {
	b.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "serve", "--config.file", cfgPath, "--web.listen-address", addr, "--log.level", "warn")
	log := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	st0 := si.Stats(b)
	p, err := testenv.StartProc(cmd)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		p.Stop(syscall.SIGTERM, 30*time.Second)
		if b.Failed() {
			b.Logf("mxprobe log (tail):\n%s", tail(log.String(), 4000))
		}
	}()
	base := "http://" + addr
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if code, _, _ := scaleGet(base + "/-/ready"); code == http.StatusOK {
			break
		}
		select {
		case <-p.Done():
			b.Fatalf("mxprobe exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("mxprobe not ready after 2m:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid := p.Cmd.Process.Pid
	t0 := time.Now()
	var res scaleResult
	var fams map[string]*dto.MetricFamily
	// Scrape every 15 s as Prometheus does, until both per-tenant probes
	// have run once for every tenant.
	end := t0.Add(interval + 90*time.Second)
	for {
		time.Sleep(min(15*time.Second, time.Until(end)))
		s0 := time.Now()
		code, body, err := scaleGet(base + "/metrics")
		d := time.Since(s0)
		if err != nil || code != http.StatusOK {
			b.Fatalf("GET /metrics: %d %v", code, err)
		}
		res.scrape, res.scrapeBytes = max(res.scrape, d), max(res.scrapeBytes, len(body))
		fams = scaleParse(b, body)
		res.peakGoroutines = max(res.peakGoroutines, int(scaleGauge(fams, "go_goroutines")))
		res.login = int(scaleHistCount(fams, "mxprobe_probe_duration_seconds", "probe", "login"))
		res.roundtrip = int(scaleHistCount(fams, "mxprobe_probe_duration_seconds", "probe", "roundtrip"))
		if (res.login >= tenants && res.roundtrip >= tenants) || time.Now().After(end) {
			break
		}
	}
	res.elapsed = time.Since(t0)
	res.cpu = procCPU(pid)
	res.peakRSS = procPeakRSS(pid)
	res.synap = int(scaleHistCount(fams, "mxprobe_probe_duration_seconds", "probe", "synapse"))
	res.runs = res.login + res.roundtrip + res.synap
	for _, m := range fams["mxprobe_probe_runs_total"].GetMetric() {
		if scaleLabel(m, "result") == "failure" {
			res.failures += int(m.GetCounter().GetValue())
		}
	}
	res.p50, res.p99 = scaleQuantile(fams, "mxprobe_scheduler_lateness_seconds", 0.5), scaleQuantile(fams, "mxprobe_scheduler_lateness_seconds", 0.99)
	// Rooms are left and forgotten at the end of each round trip: stop the
	// daemon (runs in flight finish or clean up within its grace) first.
	p.Stop(syscall.SIGTERM, 30*time.Second)
	st := si.Stats(b)
	res.standinCPU = time.Duration((st.CPUSeconds - st0.CPUSeconds) * float64(time.Second))
	b.Logf("%d tenants: %d login + %d round trip + %d synapse runs in %s (%d failed), p50/p99 lateness %.1f/%.1f ms, mxprobe CPU %s (%.2f ms/run), peak RSS %.1f MB, peak goroutines %d, /metrics %s for %.1f MB; stand-in CPU %.1f s, rooms left %d",
		tenants, res.login, res.roundtrip, res.synap, res.elapsed.Round(time.Second), res.failures, res.p50*1000, res.p99*1000,
		res.cpu.Round(time.Millisecond), float64(res.cpu.Microseconds())/1000/float64(max(1, res.runs)), float64(res.peakRSS)/1e6,
		res.peakGoroutines, res.scrape.Round(time.Millisecond), float64(res.scrapeBytes)/1e6, res.standinCPU.Seconds(), st.PeerRooms)
	switch {
	case res.login < tenants || res.roundtrip < tenants:
		b.Fatalf("only %d login and %d round trip runs of %d each in %s", res.login, res.roundtrip, tenants, res.elapsed)
	case res.failures > 0:
		b.Fatalf("%d runs failed", res.failures)
	case st.PeerRooms != 0:
		b.Fatalf("%d probe rooms left behind", st.PeerRooms)
	case res.p99 >= 1:
		b.Fatalf("p99 schedule lateness %.3f s", res.p99)
	case tenants >= 25000 && res.peakRSS >= 150e6:
		b.Fatalf("peak RSS %.1f MB, the target is < 150 MB", float64(res.peakRSS)/1e6)
	}
	return res
}

func scaleGet(url string) (int, []byte, error) {
	// Long enough for a /metrics of 25,000 tenants on a loaded machine: the
	// scrape time is a figure of the benchmark, not a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func scaleParse(b *testing.B, body []byte) map[string]*dto.MetricFamily {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		b.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

func scaleLabel(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func scaleGauge(fams map[string]*dto.MetricFamily, name string) float64 {
	for _, m := range fams[name].GetMetric() {
		return m.GetGauge().GetValue()
	}
	return 0
}

func scaleHistCount(fams map[string]*dto.MetricFamily, name, lname, lvalue string) uint64 {
	for _, m := range fams[name].GetMetric() {
		if scaleLabel(m, lname) == lvalue {
			return m.GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// scaleQuantile interpolates quantile q in the buckets of an unlabelled
// histogram, as PromQL's histogram_quantile does.
func scaleQuantile(fams map[string]*dto.MetricFamily, name string, q float64) float64 {
	ms := fams[name].GetMetric()
	if len(ms) == 0 {
		return math.NaN()
	}
	h := ms[0].GetHistogram()
	bs := h.GetBucket()
	sort.Slice(bs, func(i, j int) bool { return bs[i].GetUpperBound() < bs[j].GetUpperBound() })
	total := float64(h.GetSampleCount())
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, bk := range bs {
		c := float64(bk.GetCumulativeCount())
		if c >= rank {
			if c == prevCount {
				return bk.GetUpperBound()
			}
			return prevBound + (bk.GetUpperBound()-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = bk.GetUpperBound(), c
	}
	return math.Inf(1)
}

// procPeakRSS is the peak resident set size (VmHWM) of process pid.
func procPeakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
