package deploy

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/dashboards"
	"github.com/mxprobe/mxprobe/internal/testenv"
)

// startPrometheus runs Debian's prometheus on loopback with the given
// configuration (and files beside it, such as rules) until the test ends.
func startPrometheus(t *testing.T, cfg string, files map[string][]byte) (promAPI, <-chan struct{}, *syncBuffer) {
	t.Helper()
	promBin := tool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(promBin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	proc, err := testenv.StartProc(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Stop(syscall.SIGTERM, 15*time.Second)
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	return promAPI{base: fmt.Sprintf("http://127.0.0.1:%d", port)}, proc.Done(), logs
}

// queryAt evaluates expr at ts and returns the values by label set.
func (p promAPI) queryAt(expr string, ts float64) (map[string]float64, error) {
	r, err := p.get("/api/v1/query", url.Values{"query": {expr}, "time": {strconv.FormatFloat(ts, 'f', 3, 64)}})
	if err != nil {
		return nil, err
	}
	var d struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return nil, fmt.Errorf("%s: %v", expr, err)
	}
	out := map[string]float64{}
	for _, s := range d.Result {
		var ks []string
		for k, v := range s.Metric {
			ks = append(ks, k+"="+v)
		}
		sort.Strings(ks)
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %v", expr, s.Value)
		}
		out[strings.Join(ks, ",")] = v
	}
	return out, nil
}

// TestTwoReplicasNoDoubleCounting is "Done when" 3 (replicas): two mxprobe
// replicas, both running the global synapse_metrics probe over their own
// replay of a Synapse worker deployment, scraped by one Prometheus (as jobs
// mxprobe-a and mxprobe-b). Every query of the Synapse dashboard over
// mxprobe's gauges gives, over both replicas, a value between the two
// single-replica values, for the same series: no panel double-counts. A
// naive sum over the replicas is shown to exceed both (the check can fail).
func TestTwoReplicasNoDoubleCounting(t *testing.T) {
	tool(t, "prometheus", "prometheus")
	testenv.MarkIntegration(t, "real Prometheus, two mxprobe replicas")
	d := testenv.SharedDendrite(t)
	a := testenv.StartMxprobeGlobal(t, d)
	b := testenv.StartMxprobeGlobal(t, d)
	api, done, logs := startPrometheus(t, fmt.Sprintf(`global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: mxprobe-a
    static_configs: [{targets: [%q]}]
  - job_name: mxprobe-b
    static_configs: [{targets: [%q]}]
`, a.Addr, b.Addr), nil)

	both, ja, jb := "mxprobe-a|mxprobe-b", "mxprobe-a", "mxprobe-b"
	waitFor(t, 90*time.Second, done, logs, "Synapse signals from both replicas", func() error {
		s, err := api.query(`count by (job) (mxprobe_synapse_requests_per_second{servlet="all"}) and count by (job) (mxprobe_synapse_process_up)`)
		if err != nil {
			return err
		}
		if len(s) != 2 {
			return fmt.Errorf("%d jobs", len(s))
		}
		return nil
	})
	// Let a few more scrapes in, so every derived gauge has a sample.
	time.Sleep(5 * time.Second)
	ts := float64(time.Now().Add(-3*time.Second).UnixMilli()) / 1000

	qs, err := dashboards.All()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for k, v := range dashboards.ParseValues {
		values[k] = v
	}
	values["__rate_interval"] = "1m"
	eval := func(expr, job string) map[string]float64 {
		values["job"] = job
		e, err := dashboards.Substitute(expr, values)
		if err != nil {
			t.Fatal(err)
		}
		r, err := api.queryAt(e, ts)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	checked := 0
	for _, q := range qs {
		if q.Variable || q.Dashboard != "mxprobe-synapse.json" || !strings.Contains(q.Expr, "mxprobe_synapse_") {
			continue
		}
		rb, ra, rbb := eval(q.Expr, both), eval(q.Expr, ja), eval(q.Expr, jb)
		if len(rb) == 0 || len(ra) == 0 || len(rbb) == 0 {
			t.Errorf("%s: no data (both %d, a %d, b %d series)", q.Where, len(rb), len(ra), len(rbb))
			continue
		}
		// Each series over both replicas is one of a single replica (the
		// replica label aggregated away; the two may differ in which caches
		// are the most looked-up), and its value lies between theirs.
		for k, v := range rb {
			if strings.Contains(","+k, ",instance=") || strings.Contains(","+k, ",job=") {
				t.Errorf("%s: series {%s} keeps the replica's labels: two replicas give two series", q.Where, k)
			}
			va, oka := ra[k]
			vb, okb := rbb[k]
			switch {
			case !oka && !okb:
				t.Errorf("%s: series {%s} over both replicas, over neither alone", q.Where, k)
				continue
			case !oka:
				va = vb
			case !okb:
				vb = va
			}
			lo, hi := math.Min(va, vb), math.Max(va, vb)
			if v < lo-1e-9*math.Abs(lo) || v > hi+1e-9*math.Abs(hi) {
				t.Errorf("%s {%s}: %g over both replicas, %g and %g over each: counted twice", q.Where, k, v, va, vb)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Errorf("only %d series checked", checked)
	}
	// The check can fail: a plain sum over the replicas counts twice.
	naive := `sum(mxprobe_synapse_requests_per_second{job=~"$job",servlet="all"})`
	nb, na, nbb := eval(naive, both), eval(naive, ja), eval(naive, jb)
	if nb[""] <= math.Max(na[""], nbb[""]) {
		t.Errorf("naive sum %g not above %g and %g", nb[""], na[""], nbb[""])
	}
	t.Logf("%d series of the Synapse dashboard checked over two replicas; a naive sum gives %g req/s against %g and %g", checked, nb[""], na[""], nbb[""])
}
