package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes/shard"
)

// TestShardedReplicas runs a sharded deployment as it runs in production:
// several `mxprobe serve` processes with --shard.index/--shard.count over one
// homeserver stand-in (a process of its own, which records through which
// replica's listener each tenant's login probe came), alerting into one real
// Alertmanager. For each shard count in turn (3, then 4, then 2, all
// replicas restarted as a StatefulSet rollout does) it checks that
//
//   - every tenant is probed within one interval of the replicas being ready,
//     by exactly one replica, the one rendezvous hashing names;
//   - no tenant is probed twice within half an interval (two replicas, or one
//     replica twice);
//   - the fraction of tenants that changed replica is the ideal one of
//     rendezvous hashing (1/4 for 3 → 4, 1/2 for 4 → 2);
//   - Alertmanager holds exactly one alert per failing tenant and one for the
//     global probe every replica runs, and none of them was resolved and
//     fired again over the rollouts (its start time never changes).
//
// MXPROBE_SHARD_TENANTS raises the tenant count and MXPROBE_SHARD_INTERVAL
// sets the login interval; the default keeps the test well under two
// minutes. BenchmarkShardedReplicas100000Tenants runs the same at 100,000
// tenants (docs/bench.md).
func TestShardedReplicas(t *testing.T) {
	tenants, interval := shardSize(t, 10000)
	runShardedReplicas(t, tenants, interval, false)
}

// BenchmarkShardedReplicas100000Tenants is TestShardedReplicas at 100,000
// tenants (the platform's target, which the test scales down for CI time),
// with the same checks: it fails when a tenant is missed, probed twice or
// by a replica that does not own it, when the moved fraction strays from
// the ideal, or when an alert is missing from Alertmanager, duplicated or
// resolved and fired anew. It reports the tenants, the processes, and per
// shard count (prefix r3-, r4-, r2-) the runs in the first interval after
// the replicas were ready, the tenants probed twice, missed or misplaced,
// the moved fraction and its ideal, the time from the rollout's start until
// the last tenant's first run by its new owner, and the alerts in
// Alertmanager (exactly once and never restarted) against those expected.
// Unlike the test it goes on after a failing shard count, so that one run
// gives every figure.
//
// It runs once whatever -benchtime says: `make bench`, or alone
// `go test -benchtime 1x -run '^$' -bench ShardedReplicas100000 ./cmd/mxprobe/`
// (about 10 minutes). MXPROBE_SHARD_TENANTS and MXPROBE_SHARD_INTERVAL
// shrink it for a quick look (for example 20000).
func BenchmarkShardedReplicas100000Tenants(b *testing.B) {
	tenants, interval := shardSize(b, 100000)
	res := runShardedReplicas(b, tenants, interval, true)
	b.ReportMetric(float64(tenants), "tenants")
	b.ReportMetric(float64(res.processes), "processes")
	b.ReportMetric(interval.Seconds(), "interval-s")
	for _, st := range res.steps {
		p := fmt.Sprintf("r%d-", st.count)
		b.ReportMetric(float64(st.runsFirstInterval), p+"runs/interval")
		b.ReportMetric(float64(st.doubled), p+"double-probed")
		b.ReportMetric(float64(st.missed), p+"missed")
		b.ReportMetric(float64(st.misplaced), p+"misplaced")
		if st.from > 0 {
			b.ReportMetric(100*st.moved, p+"moved-%")
			b.ReportMetric(100*st.ideal, p+"ideal-%")
		}
		b.ReportMetric(st.handover.Seconds(), p+"handover-s")
		b.ReportMetric(float64(st.alerts.delivered), p+"alerts-delivered")
		b.ReportMetric(float64(st.alerts.expected), p+"alerts-expected")
	}
	// A failed benchmark prints no metrics: the log keeps the figures.
	b.Logf("figures: tenants %d, interval %s, %s", tenants, interval, res)
}

// shardSize is the tenant count (def, or MXPROBE_SHARD_TENANTS) and the
// login interval (MXPROBE_SHARD_INTERVAL, or 10 s up to 10,000 tenants and
// 1.2 ms per tenant above, about 830 runs/s over all replicas: what this
// 2-core machine, shared with other suites, carried at 100,000 tenants;
// at 2,000 runs/s, a 50 s interval, a tenth of the tenants were reached
// late).
func shardSize(tb testing.TB, def int) (int, time.Duration) {
	tb.Helper()
	tenants := def
	if v := os.Getenv("MXPROBE_SHARD_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			tb.Fatalf("MXPROBE_SHARD_TENANTS=%q: want a number ≥ 100", v)
		}
		tenants = n
	}
	interval := 10 * time.Second
	if tenants > 10000 {
		interval = (time.Duration(tenants) * 1200 * time.Microsecond).Round(time.Second)
	}
	if v := os.Getenv("MXPROBE_SHARD_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			tb.Fatalf("MXPROBE_SHARD_INTERVAL=%q: want a duration of 5s or more", v)
		}
		interval = d
	}
	return tenants, interval
}

// shardResult is what runShardedReplicas measured.
type shardResult struct {
	processes int // replicas at once, at most
	steps     []shardStep
}

// shardStep is one shard count's figures.
type shardStep struct {
	count, from       int // replicas now and before (0 for the first count)
	runsFirstInterval int // runs of all replicas in the first interval after ready
	missed, misplaced int // tenants not probed within one interval; probed by a non-owner
	doubled           int // tenants probed twice within half an interval or too often
	moved, ideal      float64
	handover          time.Duration // rollout start to the last tenant's first run
	alerts            shardAlerts
}

func (r shardResult) String() string {
	var parts []string
	for _, st := range r.steps {
		s := fmt.Sprintf("%d replicas: %d runs in the first interval, %d missed, %d misplaced, %d double-probed, hand-over %s, alerts %d of %d (%d duplicated, %d fired anew)",
			st.count, st.runsFirstInterval, st.missed, st.misplaced, st.doubled, st.handover.Round(100*time.Millisecond),
			st.alerts.delivered, st.alerts.expected, st.alerts.duplicated, st.alerts.refired)
		if st.from > 0 {
			s += fmt.Sprintf(", moved %.1f %% (ideal %.1f %%)", 100*st.moved, 100*st.ideal)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// runShardedReplicas is TestShardedReplicas's body at the given size (see
// there for what it checks); keepGoing goes on to the next shard count
// after a failing one.
func runShardedReplicas(tb testing.TB, tenants int, interval time.Duration, keepGoing bool) shardResult {
	tb.Helper()
	// Slack for a busy machine: startup, a late run, a delivery.
	slack := 4 * time.Second
	const brokenEvery = 200 // tenants whose bot password is wrong: their login alert fires
	counts := []int{3, 4, 2}
	maxReplicas := 4

	bin := testenv.BuildMxprobe(tb)
	am := testenv.StartAlertmanager(tb)
	si := testenv.StartStandin(tb, tenants, maxReplicas)
	dir := tb.TempDir()

	tenantCfg := make([]map[string]any, tenants)
	broken := map[string]bool{}
	for i := range tenants {
		id, user := fmt.Sprintf("t%06d", i), testenv.StandinUser(i)
		pw := "pw-" + user
		if i%brokenEvery == 0 {
			pw = "not-the-password"
			broken[id] = true
		}
		tenantCfg[i] = map[string]any{"id": id, "bot": map[string]any{"method": "password", "user": user, "password": pw}}
	}
	// One configuration per replica slot: the same but for the listener
	// (which tells the stand-in who probed) and the data folder (a
	// StatefulSet pod's own volume, which keeps the alert state).
	cfgPath := func(slot int) string { return filepath.Join(dir, fmt.Sprintf("mxprobe-%d.yml", slot)) }
	for slot := range maxReplicas {
		cfg := map[string]any{
			"global": map[string]any{
				"homeserver_url": si.URLs[slot], "server_name": "localhost", "jitter": 0.7,
				"data_dir": filepath.Join(dir, fmt.Sprintf("data-%d", slot)),
			},
			"synapse_limits": map[string]any{"disabled": true},
			"tenants":        tenantCfg,
			"probes": []map[string]any{
				{"name": "login", "type": "login", "schedule": "@every " + interval.String(), "timeout": "10s"},
				// A global probe every replica runs, failing everywhere: its
				// alert comes from every replica and must be one in Alertmanager.
				{"name": "synapse", "type": "synapse_metrics", "schedule": "@every " + interval.String(), "timeout": "5s",
					"synapse": map[string]any{"url": "http://127.0.0.1:1/_synapse/metrics"}},
			},
			"alerting": map[string]any{
				"rules": []map[string]any{
					{"name": "ShardLoginFailing", "probe": "login", "failures": 1},
					{"name": "ShardSynapseDown", "probe": "synapse", "failures": 1},
				},
				"notifiers": []map[string]any{{"name": "am", "type": "alertmanager",
					"alertmanager": map[string]any{"urls": []string{am}, "resend_interval": "10s"}}},
			},
		}
		b, err := yaml.Marshal(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(cfgPath(slot), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}

	var running []*replica
	stopAll := func() {
		var wg sync.WaitGroup
		for _, r := range running {
			wg.Add(1)
			go func() { defer wg.Done(); r.stop(tb) }()
		}
		wg.Wait()
		running = nil
	}
	tb.Cleanup(stopAll)

	res := shardResult{processes: slices.Max(counts)}
	var prevOwner map[int]int
	var prevCount int
	alertStart := map[string]time.Time{}
	for pi, count := range counts {
		rollout := time.Now() // the hand-over begins: the old replicas stop
		stopAll()
		si.Runs(tb) // the previous replicas' runs are checked; they are gone now
		started := time.Now()
		running = startReplicas(tb, bin, cfgPath, count)
		ready := time.Now()
		observe := interval + slack
		if pi == 0 {
			observe = 2*interval + slack // steady state: a second interval
		}
		time.Sleep(time.Until(ready.Add(observe)))
		runs := si.Runs(tb)
		end := time.Now()
		var cpu time.Duration
		for _, r := range running {
			cpu += procCPU(r.proc.Cmd.Process.Pid)
		}
		tb.Logf("%d replicas: ready %s after start, %d requests in %s, replicas' CPU %s (%.2f ms per request)", count, ready.Sub(started).Round(time.Millisecond),
			len(runs), end.Sub(started).Round(time.Millisecond), cpu.Round(time.Millisecond), float64(cpu.Microseconds())/1000/float64(max(1, len(runs))))

		byTenant := make(map[int][]testenv.StandinRun, tenants)
		for _, r := range runs {
			i, err := strconv.Atoi(strings.TrimPrefix(r.User, "bot"))
			if err != nil || i < 0 || i >= tenants {
				tb.Fatalf("run of unknown user %q", r.User)
			}
			byTenant[i] = append(byTenant[i], r)
		}
		st := shardStep{count: count, from: prevCount}
		owner := make(map[int]int, tenants)
		var missing, doubled, misplaced []string
		var lastFirst time.Time
		for i := range tenants {
			id := fmt.Sprintf("t%06d", i)
			rs := runsOf(byTenant[i])
			for _, r := range rs {
				if !r.At.Before(ready) && r.At.Before(ready.Add(interval)) {
					st.runsFirstInterval++
				}
			}
			if len(rs) == 0 || !rs[0].At.Before(ready.Add(interval+slack)) {
				missing = append(missing, id)
				continue
			}
			if rs[0].At.After(lastFirst) {
				lastFirst = rs[0].At
			}
			want := shard.Of(id, count)
			owner[i] = rs[0].Listener
			if maxRuns := int(end.Sub(started)/interval) + 1; len(rs) > maxRuns {
				doubled = append(doubled, fmt.Sprintf("%s: %d runs in %s", id, len(rs), end.Sub(started).Round(time.Second)))
			}
			for k, r := range rs {
				if r.Listener != want {
					misplaced = append(misplaced, fmt.Sprintf("%s by replica %d (owner %d)", id, r.Listener, want))
					break
				}
				if k > 0 && r.At.Sub(rs[k-1].At) < interval/2 {
					doubled = append(doubled, fmt.Sprintf("%s at %s and %s by replicas %d, %d", id,
						rs[k-1].At.Format("15:04:05.000"), r.At.Format("15:04:05.000"), rs[k-1].Listener, r.Listener))
					break
				}
			}
		}
		st.missed, st.misplaced, st.doubled = len(missing), len(misplaced), len(doubled)
		if !lastFirst.IsZero() {
			st.handover = lastFirst.Sub(rollout)
		}
		report := func(what string, l []string) {
			if len(l) > 0 {
				tb.Errorf("%d replicas: %d tenants %s, e.g. %s", count, len(l), what, strings.Join(l[:min(5, len(l))], "; "))
			}
		}
		report("not probed within one interval of the replicas being ready", missing)
		report("probed by a replica that does not own them", misplaced)
		report("probed twice within half an interval", doubled)
		perReplica := make([]int, count)
		for _, o := range owner {
			perReplica[o]++
		}
		tb.Logf("%d replicas: tenants per replica %v, %d runs in the first interval, last tenant's first run %s after the rollout began",
			count, perReplica, st.runsFirstInterval, st.handover.Round(time.Millisecond))

		if prevOwner != nil {
			moved := 0
			for i, o := range owner {
				if p, ok := prevOwner[i]; ok && p != o {
					moved++
				}
			}
			st.moved = float64(moved) / float64(max(1, len(owner)))
			st.ideal = float64(abs(count-prevCount)) / float64(max(count, prevCount))
			tb.Logf("%d → %d replicas: %d of %d tenants moved (%.1f %%, ideal %.1f %%)", prevCount, count, moved, len(owner), 100*st.moved, 100*st.ideal)
			if math.Abs(st.moved-st.ideal) > 0.03 {
				tb.Errorf("%d → %d replicas moved %.1f %% of the tenants, ideal %.1f %%", prevCount, count, 100*st.moved, 100*st.ideal)
			}
		}
		prevOwner, prevCount = owner, count

		st.alerts = checkShardAlerts(tb, am, broken, alertStart, 2*interval)
		res.steps = append(res.steps, st)
		if tb.Failed() && !keepGoing {
			break
		}
	}
	return res
}

// runsOf sorts the requests the stand-in recorded for one tenant and merges
// those of one replica less than mergeWithin apart into one run: after a
// restart the login probe's first run proves its restored session with a
// whoami (step session_resume) before its own, over a second apart on a
// busy machine. (A replica starting two runs of one tenant at once is
// ruled out by the engine's in-flight check; the run count per tenant is
// checked besides.)
func runsOf(rs []testenv.StandinRun) []testenv.StandinRun {
	sort.Slice(rs, func(a, b int) bool { return rs[a].At.Before(rs[b].At) })
	var out []testenv.StandinRun
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Listener == r.Listener && r.At.Sub(out[n-1].At) < mergeWithin {
			continue
		}
		out = append(out, r)
	}
	return out
}

const mergeWithin = 3 * time.Second

// replica is one running `mxprobe serve`.
type replica struct {
	slot int
	proc *testenv.Proc
	log  *testenv.SyncBuffer
}

func (r *replica) stop(tb testing.TB) {
	r.proc.Stop(syscall.SIGTERM, 20*time.Second)
	if tb.Failed() {
		tb.Logf("replica %d log (tail):\n%s", r.slot, tail(r.log.String(), 3000))
	}
}

// procCPU is the user and system CPU time of process pid so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces), from its ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ, 100 on Linux
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// startReplicas starts count replicas at once (slot i is shard i) and
// returns once all are ready.
func startReplicas(t testing.TB, bin string, cfgPath func(int) string, count int) []*replica {
	t.Helper()
	rs := make([]*replica, count)
	addrs := make([]string, count)
	for i := range count {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "serve", "--config.file", cfgPath(i), "--web.listen-address", addrs[i], "--log.level", "warn",
			"--shard.index", strconv.Itoa(i), "--shard.count", strconv.Itoa(count))
		log := &testenv.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = log, log
		p, err := testenv.StartProc(cmd)
		if err != nil {
			t.Fatal(err)
		}
		rs[i] = &replica{slot: i, proc: p, log: log}
	}
	deadline := time.Now().Add(60 * time.Second)
	for i, r := range rs {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addrs[i]+"/-/ready", nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			cancel()
			if err == nil && resp.StatusCode == http.StatusOK {
				break
			}
			select {
			case <-r.proc.Done():
				t.Fatalf("replica %d/%d exited at start:\n%s", i, count, r.log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d/%d not ready after 60s:\n%s", i, count, r.log.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return rs
}

// shardAlerts is what Alertmanager held at a check.
type shardAlerts struct {
	expected   int // one per broken tenant and one for the global probe
	delivered  int // expected alerts held exactly once, never fired anew
	duplicated int // alerts beyond the first of one labels set, or for healthy tenants
	refired    int // alerts whose start changed since an earlier check
}

// checkShardAlerts waits up to timeout for Alertmanager to hold exactly one
// active alert per broken tenant and one for the global probe, and checks
// that no alert started again since an earlier check (start).
func checkShardAlerts(tb testing.TB, am string, broken map[string]bool, start map[string]time.Time, timeout time.Duration) shardAlerts {
	tb.Helper()
	type amAlert struct {
		Labels   map[string]string `json:"labels"`
		StartsAt time.Time         `json:"startsAt"`
	}
	var problem string
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		q := url.Values{"filter": {`alertname=~"Shard.*"`}, "active": {"true"}, "silenced": {"true"}, "inhibited": {"true"}, "unprocessed": {"true"}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, am+"/api/v2/alerts?"+q.Encode(), nil)
		resp, err := http.DefaultClient.Do(req)
		var got []amAlert
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
		}
		cancel()
		if err != nil {
			tb.Fatalf("alertmanager: %v", err)
		}
		seen := map[string]int{}
		problem = ""
		synapse := 0
		res := shardAlerts{expected: len(broken) + 1}
		for _, a := range got {
			switch a.Labels["alertname"] {
			case "ShardSynapseDown":
				synapse++
			case "ShardLoginFailing":
				id := a.Labels["tenant"]
				seen[id]++
				if !broken[id] {
					res.duplicated++
					if problem == "" {
						problem = fmt.Sprintf("an alert for healthy tenant %s", id)
					}
				}
			}
		}
		for id := range broken {
			if seen[id] == 1 {
				res.delivered++
			} else if problem == "" {
				problem = fmt.Sprintf("%d alerts for tenant %s", seen[id], id)
			}
			res.duplicated += max(0, seen[id]-1)
		}
		if synapse == 1 {
			res.delivered++
		} else if problem == "" {
			problem = fmt.Sprintf("%d alerts for the global probe", synapse)
		}
		res.duplicated += max(0, synapse-1)
		if problem == "" {
			for _, a := range got {
				key := a.Labels["alertname"] + "/" + a.Labels["tenant"]
				if s, ok := start[key]; ok && !s.Equal(a.StartsAt) {
					res.refired++
					if res.refired <= 5 {
						tb.Errorf("alert %s started again (%s, first %s): it was resolved and fired anew", key, a.StartsAt, s)
					}
				}
				start[key] = a.StartsAt
			}
			if res.refired > 0 {
				tb.Errorf("%d alerts started again", res.refired)
			}
			res.delivered -= res.refired
			tb.Logf("Alertmanager: %d alerts, one per failing tenant (%d) and one for the global probe; %d fired anew", len(got), len(broken), res.refired)
			return res
		}
		if time.Now().After(deadline) {
			tb.Errorf("Alertmanager after %s: %s (%d alerts)", timeout, problem, len(got))
			return res
		}
		time.Sleep(500 * time.Millisecond)
	}
}
