package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/dashboards"
	"github.com/mxprobe/mxprobe/internal/testenv"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// promAPI is a client of a Prometheus HTTP API.
type promAPI struct{ base string }

type apiReply struct {
	Status    string          `json:"status"`
	Error     string          `json:"error"`
	ErrorType string          `json:"errorType"`
	Data      json.RawMessage `json:"data"`
}

func (p promAPI) get(path string, q url.Values) (apiReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := p.base + path
	if q != nil {
		u += "?" + q.Encode()
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return apiReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiReply{}, err
	}
	var r apiReply
	if err := json.Unmarshal(b, &r); err != nil {
		return apiReply{}, fmt.Errorf("%s: status %d, %q", path, resp.StatusCode, b)
	}
	if r.Status != "success" {
		return r, fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return r, nil
}

type sample struct {
	Metric map[string]string `json:"metric"`
}

func (p promAPI) query(expr string) ([]sample, error) {
	r, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var d struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &d); err != nil {
		return nil, err
	}
	if d.ResultType != "vector" {
		return []sample{{}}, nil // a scalar always has a value
	}
	var s []sample
	err = json.Unmarshal(d.Result, &s)
	return s, err
}

// prometheusConfig turns the example scrape config into one for the test:
// the daemon's address instead of mxprobe:9787, the test's tenants, short
// intervals, no Alertmanager; and the replayed Synapse processes scraped as
// Synapse's docs/metrics-howto.md does (one job_name, a job label per
// worker type, an index).
func prometheusConfig(t *testing.T, addr string, tenants []string, synapse []testenv.SynapseProcess) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["global"] = map[string]any{"scrape_interval": "2s", "evaluation_interval": "2s"}
	delete(cfg, "alerting")
	jobs := cfg["scrape_configs"].([]any)
	found := 0
	for _, j := range jobs {
		job := j.(map[string]any)
		switch job["job_name"] {
		case "mxprobe":
			job["static_configs"] = []any{map[string]any{"targets": []any{addr}}}
			found++
		case "mxprobe-probe":
			job["scrape_interval"], job["scrape_timeout"] = "5s", "5s"
			if auth, ok := job["authorization"].(map[string]any); ok {
				// The token file is mounted in the container; the test
				// daemon has no token, any credentials do.
				tok := filepath.Join(t.TempDir(), "mxprobe-api-token")
				if err := os.WriteFile(tok, []byte("test-token-not-checked\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				auth["credentials_file"] = tok
			}
			job["static_configs"] = []any{map[string]any{"targets": tenants}}
			relabels := job["relabel_configs"].([]any)
			last := relabels[len(relabels)-1].(map[string]any)
			if last["target_label"] != "__address__" {
				t.Fatalf("the example's last relabelling no longer sets __address__: %v", last)
			}
			last["replacement"] = addr
			found++
		}
	}
	if found != 2 {
		t.Fatalf("the example scrape config lacks the mxprobe or mxprobe-probe job")
	}
	var sc []any
	for _, p := range synapse {
		sc = append(sc, map[string]any{"targets": []any{p.Addr}, "labels": map[string]any{"job": p.Job, "index": p.Index}})
	}
	if len(sc) > 0 {
		cfg["scrape_configs"] = append(jobs, map[string]any{"job_name": "synapse", "metrics_path": "/_synapse/metrics", "static_configs": sc})
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRealPrometheus is "Done when" 3: Debian's prometheus on loopback, with
// the example scrape config and the rules, scrapes a daemon probing the local
// Dendrite; every tenant has mxprobe_probe_success, the rules load and
// evaluate without error, the blackbox-style /probe job works, and every
// dashboard query runs (the overview's return data).
func TestRealPrometheus(t *testing.T) {
	tool(t, "prometheus", "prometheus")
	testenv.MarkIntegration(t, "real Prometheus")
	d := testenv.SharedDendrite(t)
	m := testenv.StartMxprobe(t, d)

	rules, err := os.ReadFile(filepath.Join("prometheus", "mxprobe.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	api, done, logs := startPrometheus(t, string(prometheusConfig(t, m.Addr, m.Tenants, m.SynapseProcesses)),
		map[string][]byte{"mxprobe.rules.yml": rules})

	// Every tenant of the login probe is scraped (the broken one too, as 0).
	waitFor(t, 90*time.Second, done, logs, "mxprobe_probe_success for every tenant", func() error {
		s, err := api.query(`mxprobe_probe_success{job="mxprobe",probe="login"}`)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, x := range s {
			have[x.Metric["tenant"]] = true
		}
		for _, tn := range m.Tenants {
			if !have[tn] {
				return fmt.Errorf("no series for tenant %s (have %v)", tn, have)
			}
		}
		return nil
	})

	// The rules loaded and every rule evaluated without error.
	waitFor(t, 60*time.Second, done, logs, "every rule evaluated", func() error {
		r, err := api.get("/api/v1/rules", nil)
		if err != nil {
			return err
		}
		var data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := json.Unmarshal(r.Data, &data); err != nil {
			return err
		}
		n := 0
		for _, g := range data.Groups {
			for _, rl := range g.Rules {
				n++
				if rl.LastError != "" || rl.Health == "err" {
					t.Fatalf("rule %s/%s: %s", g.Name, rl.Name, rl.LastError)
				}
				if rl.Health != "ok" {
					return fmt.Errorf("rule %s/%s health %q", g.Name, rl.Name, rl.Health)
				}
			}
		}
		if n < 20 {
			return fmt.Errorf("only %d rules loaded", n)
		}
		return nil
	})

	// The blackbox-style job: one fresh run per tenant per scrape.
	waitFor(t, 60*time.Second, done, logs, "probe_success from /probe for every tenant", func() error {
		s, err := api.query(`probe_success{job="mxprobe-probe"}`)
		if err != nil {
			return err
		}
		if len(s) != len(m.Tenants) {
			return fmt.Errorf("%d series, want %d", len(s), len(m.Tenants))
		}
		return nil
	})
	if s, err := api.query(`probe_success{job="mxprobe-probe",tenant="` + m.BrokenTenant + `"} == 0`); err != nil || len(s) != 1 {
		t.Errorf("/probe of the broken tenant: %v, %v (want probe_success 0)", s, err)
	}

	// The login of the broken tenant fails: the recording rules see it.
	waitFor(t, 60*time.Second, done, logs, "success ratio of the broken tenant recorded", func() error {
		s, err := api.query(`mxprobe:probe_success_ratio:rate5m{probe="login",tenant="` + m.BrokenTenant + `"} == 0`)
		if err != nil {
			return err
		}
		if len(s) != 1 {
			return fmt.Errorf("not yet")
		}
		return nil
	})

	// Every dashboard query runs; the overview's return data.
	qs, err := dashboards.All()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for k, v := range dashboards.ParseValues {
		values[k] = v
	}
	values["job"], values["__rate_interval"], values["window"] = "mxprobe", "1m", "1h"
	values["synapse_job"] = "master|generic_worker"
	hasRoundtrip := false
	for _, p := range m.Probes {
		hasRoundtrip = hasRoundtrip || p == "roundtrip"
	}
	waitFor(t, 90*time.Second, done, logs, "every dashboard query returns data", func() error {
		var missing []string
		for _, q := range qs {
			expr, err := dashboards.Substitute(q.Expr, values)
			if err != nil {
				t.Fatalf("%s %s: %v", q.Dashboard, q.Where, err)
			}
			s, err := api.query(expr)
			if err != nil {
				t.Fatalf("%s, %s: Prometheus rejects the query: %v\n%s", q.Dashboard, q.Where, err, expr)
			}
			if len(s) > 0 {
				continue
			}
			if !hasRoundtrip && strings.Contains(expr, "message_delivery") {
				continue
			}
			// The federation dashboard's series come from federation and
			// tls probes, which need a federating homeserver this daemon
			// does not have: TestFederationDashboardData checks them.
			if q.Dashboard == "mxprobe-federation.json" {
				continue
			}
			missing = append(missing, q.Dashboard+": "+q.Where)
		}
		if len(missing) > 0 {
			return fmt.Errorf("no data for %v", missing)
		}
		return nil
	})
	t.Logf("%d dashboard queries ran on Prometheus, every one with data (Synapse's own series from %d replayed processes)", len(qs), len(m.SynapseProcesses))
}

func waitFor(t *testing.T, timeout time.Duration, done <-chan struct{}, logs *syncBuffer, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited while waiting for %s:\n%s", what, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, still waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(time.Second)
	}
}
