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
// sets the login interval (docs/bench.md has the 100,000-tenant runs); the
// default keeps the test well under two minutes.
func TestShardedReplicas(t *testing.T) {
	tenants := 10000
	if v := os.Getenv("MXPROBE_SHARD_TENANTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			t.Fatalf("MXPROBE_SHARD_TENANTS=%q: want a number ≥ 100", v)
		}
		tenants = n
	}
	interval := 10 * time.Second
	if tenants > 20000 {
		interval = time.Duration(tenants/2000) * time.Second // about 2,000 runs/s over all replicas
	}
	if v := os.Getenv("MXPROBE_SHARD_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("MXPROBE_SHARD_INTERVAL=%q: want a duration of 5s or more", v)
		}
		interval = d
	}
	// Slack for a busy machine: startup, a late run, a delivery.
	slack := 4 * time.Second
	const brokenEvery = 200 // tenants whose bot password is wrong: their login alert fires
	counts := []int{3, 4, 2}
	maxReplicas := 4

	bin := testenv.BuildMxprobe(t)
	am := testenv.StartAlertmanager(t)
	si := testenv.StartStandin(t, tenants, maxReplicas)
	dir := t.TempDir()

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
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath(slot), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var running []*replica
	stopAll := func() {
		var wg sync.WaitGroup
		for _, r := range running {
			wg.Add(1)
			go func() { defer wg.Done(); r.stop(t) }()
		}
		wg.Wait()
		running = nil
	}
	t.Cleanup(stopAll)

	var prevOwner map[int]int
	var prevCount int
	alertStart := map[string]time.Time{}
	for pi, count := range counts {
		stopAll()
		si.Runs(t) // the previous replicas' runs are checked; they are gone now
		started := time.Now()
		running = startReplicas(t, bin, cfgPath, count)
		ready := time.Now()
		observe := interval + slack
		if pi == 0 {
			observe = 2*interval + slack // steady state: a second interval
		}
		time.Sleep(time.Until(ready.Add(observe)))
		runs := si.Runs(t)
		end := time.Now()
		var cpu time.Duration
		for _, r := range running {
			cpu += procCPU(r.proc.Cmd.Process.Pid)
		}
		t.Logf("%d replicas: ready %s after start, %d requests in %s, replicas' CPU %s (%.2f ms per request)", count, ready.Sub(started).Round(time.Millisecond),
			len(runs), end.Sub(started).Round(time.Millisecond), cpu.Round(time.Millisecond), float64(cpu.Microseconds())/1000/float64(max(1, len(runs))))

		byTenant := make(map[int][]testenv.StandinRun, tenants)
		for _, r := range runs {
			i, err := strconv.Atoi(strings.TrimPrefix(r.User, "bot"))
			if err != nil || i < 0 || i >= tenants {
				t.Fatalf("run of unknown user %q", r.User)
			}
			byTenant[i] = append(byTenant[i], r)
		}
		owner := make(map[int]int, tenants)
		var missing, doubled, misplaced []string
		for i := range tenants {
			id := fmt.Sprintf("t%06d", i)
			rs := runsOf(byTenant[i])
			if len(rs) == 0 || !rs[0].At.Before(ready.Add(interval+slack)) {
				missing = append(missing, id)
				continue
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
		report := func(what string, l []string) {
			if len(l) > 0 {
				t.Errorf("%d replicas: %d tenants %s, e.g. %s", count, len(l), what, strings.Join(l[:min(5, len(l))], "; "))
			}
		}
		report("not probed within one interval of the replicas being ready", missing)
		report("probed by a replica that does not own them", misplaced)
		report("probed twice within half an interval", doubled)
		perReplica := make([]int, count)
		for _, o := range owner {
			perReplica[o]++
		}
		t.Logf("%d replicas: tenants per replica %v", count, perReplica)

		if prevOwner != nil {
			moved := 0
			for i, o := range owner {
				if p, ok := prevOwner[i]; ok && p != o {
					moved++
				}
			}
			frac := float64(moved) / float64(len(owner))
			ideal := float64(abs(count-prevCount)) / float64(max(count, prevCount))
			t.Logf("%d → %d replicas: %d of %d tenants moved (%.1f %%, ideal %.1f %%)", prevCount, count, moved, len(owner), 100*frac, 100*ideal)
			if math.Abs(frac-ideal) > 0.03 {
				t.Errorf("%d → %d replicas moved %.1f %% of the tenants, ideal %.1f %%", prevCount, count, 100*frac, 100*ideal)
			}
		}
		prevOwner, prevCount = owner, count

		checkShardAlerts(t, am, broken, alertStart, 2*interval)
		if t.Failed() {
			return
		}
	}
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

func (r *replica) stop(t *testing.T) {
	r.proc.Stop(syscall.SIGTERM, 20*time.Second)
	if t.Failed() {
		t.Logf("replica %d log (tail):\n%s", r.slot, tail(r.log.String(), 3000))
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
func startReplicas(t *testing.T, bin string, cfgPath func(int) string, count int) []*replica {
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

// checkShardAlerts waits up to timeout for Alertmanager to hold exactly one
// active alert per broken tenant and one for the global probe, and checks
// that no alert started again since an earlier check (start).
func checkShardAlerts(t *testing.T, am string, broken map[string]bool, start map[string]time.Time, timeout time.Duration) {
	t.Helper()
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
			t.Fatalf("alertmanager: %v", err)
		}
		seen := map[string]int{}
		problem = ""
		synapse := 0
		for _, a := range got {
			switch a.Labels["alertname"] {
			case "ShardSynapseDown":
				synapse++
			case "ShardLoginFailing":
				id := a.Labels["tenant"]
				seen[id]++
				if !broken[id] && problem == "" {
					problem = fmt.Sprintf("an alert for healthy tenant %s", id)
				}
			}
		}
		for id := range broken {
			if seen[id] != 1 && problem == "" {
				problem = fmt.Sprintf("%d alerts for tenant %s", seen[id], id)
			}
		}
		if synapse != 1 && problem == "" {
			problem = fmt.Sprintf("%d alerts for the global probe", synapse)
		}
		if problem == "" {
			for _, a := range got {
				key := a.Labels["alertname"] + "/" + a.Labels["tenant"]
				if s, ok := start[key]; ok && !s.Equal(a.StartsAt) {
					t.Errorf("alert %s started again (%s, first %s): it was resolved and fired anew", key, a.StartsAt, s)
				}
				start[key] = a.StartsAt
			}
			t.Logf("Alertmanager: %d alerts, one per failing tenant (%d) and one for the global probe", len(got), len(broken))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Alertmanager after %s: %s (%d alerts)", timeout, problem, len(got))
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
