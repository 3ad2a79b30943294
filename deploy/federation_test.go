package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/dashboards"
	"github.com/mxprobe/mxprobe/internal/testenv"
)

// TestFederationDashboardData: every query of the federation dashboard
// returns data from a real Prometheus scraping a daemon whose federation,
// federation_roundtrip and tls probes watch two Dendrites federating over
// TLS on loopback, with one server name and one endpoint down (so the
// failure panels have something to show); the shipped rules load beside
// them.
func TestFederationDashboardData(t *testing.T) {
	tool(t, "prometheus", "prometheus")
	testenv.MarkIntegration(t, "real Prometheus")
	ca := testenv.NewTestCA(t)
	leaf := ca.Issue(t, time.Now().Add(90*24*time.Hour), "127.0.0.1")
	fed := &testenv.DendriteFederation{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}
	local := testenv.NewDendrite(t, testenv.DendriteOptions{Federation: fed})
	remote := testenv.NewDendrite(t, testenv.DendriteOptions{Federation: fed})
	bot, botPW := local.User(t, "fedbot")
	peer, peerPW := remote.User(t, "fedpeer")
	closed, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down := fmt.Sprintf("127.0.0.1:%d", closed)
	names := []string{local.ServerName, remote.ServerName}
	m := testenv.StartMxprobeConfig(t, map[string]any{
		"global": map[string]any{"homeserver_url": local.URL, "server_name": local.ServerName, "data_dir": filepath.Join(t.TempDir(), "data")},
		"tenants": []map[string]any{{"id": "delta", "name": "Delta",
			"bot": map[string]any{"method": "password", "user": bot, "password": botPW}}},
		"synapse_limits": map[string]any{"disabled": true},
		"probes": []map[string]any{
			{"name": "federation", "type": "federation", "schedule": "@every 2s", "timeout": "10s",
				"federation": map[string]any{"server_names": append(names, down), "ca_file": ca.CAFile}},
			{"name": "federation_rt", "type": "federation_roundtrip", "schedule": "@every 3s", "timeout": "20s",
				"federation_roundtrip": map[string]any{"peer": map[string]any{
					"homeserver_url": remote.URL, "server_name": remote.ServerName, "user": peer, "password": peerPW}}},
			{"name": "tls", "type": "tls", "schedule": "@every 2s", "timeout": "10s",
				"tls": map[string]any{"discover": false, "server_names": names, "endpoints": []string{down}, "ca_file": ca.CAFile}},
		},
	})
	rules, err := os.ReadFile(filepath.Join("prometheus", "mxprobe.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: [mxprobe.rules.yml]
scrape_configs:
  - job_name: mxprobe
    static_configs: [{targets: ["%s"]}]
`, m.Addr)
	api, done, logs := startPrometheus(t, cfg, map[string][]byte{"mxprobe.rules.yml": rules})

	waitFor(t, 60*time.Second, done, logs, "the daemon scraped", func() error {
		s, err := api.query(`up{job="mxprobe"} == 1`)
		if err == nil && len(s) == 0 {
			err = fmt.Errorf("not yet")
		}
		return err
	})

	qs, err := dashboards.All()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	for k, v := range dashboards.ParseValues {
		values[k] = v
	}
	values["job"], values["__rate_interval"] = "mxprobe", "1m"
	n := 0
	waitFor(t, 90*time.Second, done, logs, "every federation dashboard query returns data", func() error {
		var missing []string
		n = 0
		for _, q := range qs {
			if q.Dashboard != "mxprobe-federation.json" {
				continue
			}
			n++
			expr, err := dashboards.Substitute(q.Expr, values)
			if err != nil {
				t.Fatalf("%s: %v", q.Where, err)
			}
			s, err := api.query(expr)
			if err != nil {
				t.Fatalf("%s: Prometheus rejects the query: %v\n%s", q.Where, err, expr)
			}
			if len(s) == 0 {
				missing = append(missing, q.Where)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no data for %v", missing)
		}
		return nil
	})
	if n < 10 {
		t.Errorf("%d queries in the federation dashboard", n)
	}
	// The server name that is down, and only it, is down.
	s, err := api.query(`mxprobe_federation_up == 0`)
	if err != nil || len(s) != 1 || s[0].Metric["server_name"] != down {
		t.Errorf("federation down: %v, %v", s, err)
	}
}
