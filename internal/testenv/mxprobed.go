package testenv

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// BuildMxprobe builds cmd/mxprobe (without the race detector) into a
// temporary folder of the test and returns the binary's path.
func BuildMxprobe(t testing.TB) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "mxprobe")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/mxprobe")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/mxprobe: %v\n%s", err, out)
	}
	return bin
}

// MxprobeDaemon is a running `mxprobe serve` probing a local Dendrite with
// every probe type this build offers that can run locally.
type MxprobeDaemon struct {
	// URL is the daemon's base URL (http://127.0.0.1:port).
	URL string
	// Addr is host:port of the listener.
	Addr string
	// Tenants are the configured tenant ids; BrokenTenant's bot has a wrong
	// password, so its login fails (failing-step series exist).
	Tenants      []string
	BrokenTenant string
	// Probes are the configured probe names (named after their types);
	// Dropped are the probe types left out because this build lacks them.
	Probes  []string
	Dropped []string
	// SynapseProcesses is a replayed Synapse worker deployment for other
	// scrapers (Prometheus): the same pages the synapse_metrics probe reads
	// from its own servers (each server answers its pages in turn, so two
	// scrapers sharing one would each miss every other page).
	SynapseProcesses []SynapseProcess

	proc *Proc
	log  *SyncBuffer
}

// SyncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *SyncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *SyncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// SynapseProcess is one replayed Synapse process: its metrics listener
// (host:port, page at /_synapse/metrics) and the Prometheus job Synapse's
// docs/metrics-howto.md would give it.
type SynapseProcess struct {
	Worker, Kind, Job, Index, Addr string
}

// StartSynapseWorkers serves the worker fixture of synapsereplay (main, two
// generic workers, an event persister, a federation sender) until the test
// ends.
func StartSynapseWorkers(t testing.TB) []SynapseProcess {
	t.Helper()
	ss, err := synapsereplay.StartWorkers(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { synapsereplay.CloseWorkers(ss) })
	var out []SynapseProcess
	idx := map[string]int{}
	for _, s := range ss {
		job := synapsereplay.Job(s.Spec.Kind)
		idx[job]++
		out = append(out, SynapseProcess{Worker: s.Spec.Name, Kind: s.Spec.Kind, Job: job, Index: fmt.Sprint(idx[job]),
			Addr: strings.TrimSuffix(strings.TrimPrefix(s.URL, "http://"), "/_synapse/metrics")})
	}
	return out
}

// synapseTargets is the synapse section of a worker-deployment probe.
func synapseTargets(ps []SynapseProcess) map[string]any {
	var ts []map[string]any
	for _, p := range ps {
		ts = append(ts, map[string]any{"name": p.Worker, "kind": p.Kind, "url": "http://" + p.Addr + "/_synapse/metrics"})
	}
	return map[string]any{"targets": ts}
}

// StartMxprobeGlobal runs `mxprobe serve` with the global probes only
// (versions, and synapse_metrics over its own replayed Synapse worker
// deployment), with extra serve arguments (for example --shard.count): a
// replica of a sharded deployment.
func StartMxprobeGlobal(t testing.TB, d *Dendrite, args ...string) *MxprobeDaemon {
	t.Helper()
	bin := BuildMxprobe(t)
	dir := t.TempDir()
	ps := StartSynapseWorkers(t)
	m := &MxprobeDaemon{log: &SyncBuffer{}, Probes: []string{"versions", "synapse"}}
	cfg := map[string]any{
		"global": map[string]any{"homeserver_url": d.URL, "server_name": d.ServerName, "data_dir": filepath.Join(dir, "data")},
		"probes": []map[string]any{
			{"name": "versions", "type": "versions", "schedule": "@every 2s", "timeout": "10s"},
			{"name": "synapse", "type": "synapse_metrics", "schedule": "@every 2s", "timeout": "10s", "synapse": synapseTargets(ps)},
		},
	}
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	m.start(t, bin, cfgPath, args...)
	return m
}

// optionalProbeTypes are added to the daemon's config when the build has
// them; versions and login are always there.
var optionalProbeTypes = []string{"roundtrip", "synapse_metrics", "media"}

// StartMxprobe builds mxprobe, writes a config with healthy tenants (bot and
// peer accounts on d), one tenant whose password is wrong, and a
// synapse_metrics probe reading a replay of the Synapse reference pages, and
// runs `mxprobe serve` until the test ends. It returns once /-/ready answers.
func StartMxprobe(t testing.TB, d *Dendrite) *MxprobeDaemon {
	t.Helper()
	bin := BuildMxprobe(t)
	dir := t.TempDir()
	m := &MxprobeDaemon{BrokenTenant: "tenant-broken", log: &SyncBuffer{}}

	peer, peerPW := d.User(t, "mxpeer")
	var tenants []map[string]any
	for _, id := range []string{"tenant-a", "tenant-b"} {
		user, pw := d.User(t, "mxbot")
		tenants = append(tenants, map[string]any{
			"id": id, "name": "Test " + id,
			"bot": map[string]any{"method": "password", "user": user, "password": pw},
		})
		m.Tenants = append(m.Tenants, id)
	}
	user, _ := d.User(t, "mxbot")
	tenants = append(tenants, map[string]any{
		"id": m.BrokenTenant, "name": "Broken tenant",
		"bot": map[string]any{"method": "password", "user": user, "password": "not-the-password"},
	})
	m.Tenants = append(m.Tenants, m.BrokenTenant)

	m.SynapseProcesses = StartSynapseWorkers(t)
	probed := StartSynapseWorkers(t)
	all := map[string]map[string]any{
		"versions": {"name": "versions", "type": "versions", "schedule": "@every 2s", "timeout": "10s"},
		"login":    {"name": "login", "type": "login", "schedule": "@every 2s", "timeout": "15s"},
		"roundtrip": {"name": "roundtrip", "type": "roundtrip", "schedule": "@every 3s", "timeout": "20s",
			"roundtrip": map[string]any{"peer": map[string]any{"method": "password", "user": peer, "password": peerPW}}},
		"synapse_metrics": {"name": "synapse", "type": "synapse_metrics", "schedule": "@every 2s", "timeout": "10s",
			"synapse": synapseTargets(probed)},
		"media": {"name": "media", "type": "media", "schedule": "@every 3s", "timeout": "15s"},
	}
	cfg := map[string]any{
		"global": map[string]any{
			"homeserver_url": d.URL, "server_name": d.ServerName,
			"data_dir": filepath.Join(dir, "data"), "concurrency": 8, "jitter": 0.5,
		},
		"tenants": tenants,
		// Opted out of Synapse's limits: this daemon probes the bare Dendrite
		// every few seconds to exercise the exporters, not the schedules.
		"synapse_limits": map[string]any{"disabled": true},
		// mxprobe's own alerting, so that its families (mxprobe_alerts,
		// mxprobe_notifications_total) are served: the broken tenant's
		// failed login fires an alert, which the log notifier delivers.
		"alerting": map[string]any{
			"rules":     []map[string]any{{"name": "login_failing", "probe": "login", "failures": 1}},
			"notifiers": []map[string]any{{"name": "log", "type": "console"}},
		},
	}
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	write := func(types []string) {
		var ps []map[string]any
		for _, typ := range types {
			ps = append(ps, all[typ])
		}
		cfg["probes"] = ps
		b, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	types := []string{"versions", "login"}
	for _, typ := range optionalProbeTypes {
		write(append(types, typ))
		out, err := exec.Command(bin, "check-config", "--config.file", cfgPath).CombinedOutput()
		switch {
		case err == nil:
			types = append(types, typ)
		case strings.Contains(string(out), "not available in this build"):
			m.Dropped = append(m.Dropped, typ)
		default:
			t.Fatalf("mxprobe check-config with a %s probe: %v\n%s", typ, err, out)
		}
	}
	write(types)
	for _, typ := range types {
		m.Probes = append(m.Probes, all[typ]["name"].(string))
	}
	if len(m.Dropped) > 0 {
		t.Logf("probe types not in this build, left out: %v", m.Dropped)
	}

	m.start(t, bin, cfgPath)
	return m
}

// start runs `mxprobe serve` on cfgPath until the test ends; it returns
// once /-/ready answers.
func (m *MxprobeDaemon) start(t testing.TB, bin, cfgPath string, args ...string) {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	m.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	m.URL = "http://" + m.Addr
	cmd := exec.Command(bin, append([]string{"serve", "--config.file", cfgPath, "--web.listen-address", m.Addr, "--log.level", "warn"}, args...)...)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	if m.proc, err = StartProc(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.proc.Stop(syscall.SIGTERM, 20*time.Second)
		if t.Failed() {
			t.Logf("mxprobe log:\n%s", m.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := m.get("/-/ready"); code == http.StatusOK {
			break
		}
		select {
		case <-m.proc.Done():
			t.Fatalf("mxprobe exited at start:\n%s", m.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mxprobe not ready after 30s:\n%s", m.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *MxprobeDaemon) get(path string) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+path, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Log returns what the daemon printed so far.
func (m *MxprobeDaemon) Log() string { return m.log.String() }

// Scrape reads the daemon's /metrics in the text format.
func (m *MxprobeDaemon) Scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := m.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// SeriesNames returns the names of the series in families as they appear
// in PromQL: histograms and summaries give _bucket/_sum/_count.
func SeriesNames(fams map[string]*dto.MetricFamily) []string {
	var out []string
	for name, f := range fams {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out = append(out, name+"_bucket", name+"_sum", name+"_count")
		case dto.MetricType_SUMMARY:
			out = append(out, name, name+"_sum", name+"_count")
		default:
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// WaitForSeries scrapes until every name in want has a series (or the
// timeout), and returns the union of the series names seen in all scrapes.
func (m *MxprobeDaemon) WaitForSeries(t testing.TB, want []string, timeout time.Duration) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range SeriesNames(m.Scrape(t)) {
			seen[n] = true
		}
		var missing []string
		for _, w := range want {
			if !seen[w] {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, /metrics still lacks %v\nmxprobe log:\n%s", timeout, missing, m.log.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// SynapseReplay serves the Synapse reference pages (healthy_t0 and
// healthy_t60, alternately) at /_synapse/metrics until the test ends, so a
// synapse_metrics probe derives every signal.
func SynapseReplay(t testing.TB) *httptest.Server {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]byte
	for _, name := range []string{"healthy_t0.prom.gz", "healthy_t60.prom.gz"} {
		pages = append(pages, readGzip(t, filepath.Join(root, "probes", "synapse", "testdata", name)))
	}
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_synapse/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(pages[int(n.Add(1)-1)%len(pages)])
	}))
	t.Cleanup(srv.Close)
	return srv
}

func readGzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// StartMxprobeConfig runs `mxprobe serve` with the configuration cfg (as
// YAML-ready maps) until the test ends; it returns once /-/ready answers.
// Probes is left empty: the caller knows what it configured.
func StartMxprobeConfig(t testing.TB, cfg map[string]any, args ...string) *MxprobeDaemon {
	t.Helper()
	bin := BuildMxprobe(t)
	cfgPath := filepath.Join(t.TempDir(), "mxprobe.yml")
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	m := &MxprobeDaemon{log: &SyncBuffer{}}
	m.start(t, bin, cfgPath, args...)
	return m
}
