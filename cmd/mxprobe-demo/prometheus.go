package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// The demo starts Debian's prometheus (when installed) with the shipped
// rules, scraping the demo's mxprobe, so the rules and the dashboards'
// queries can be tried at once.
func addPrometheus(e *env) error {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		fmt.Println("prometheus not installed (apt-get install prometheus): skipping the demo Prometheus")
		return nil
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	g, _ := e.config["global"].(map[string]any)
	ext, _ := g["external_url"].(string)
	target := strings.TrimPrefix(ext, "http://")
	rules, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "mxprobe.rules.yml"))
	if err != nil {
		return err
	}
	dir := filepath.Join(e.dir, "prometheus")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "mxprobe.rules.yml"), rules, 0o600); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 10s, evaluation_interval: 10s}
rule_files: [mxprobe.rules.yml]
scrape_configs:
  - job_name: mxprobe
    static_configs: [{targets: [%q]}]
`, target)
	// The replayed Synapse processes, as Synapse's docs/metrics-howto.md
	// scrapes workers: one job name, a job label per worker type.
	ws, err := demoSynapseWorkers(e)
	if err != nil {
		return err
	}
	cfg += "  - job_name: synapse\n    metrics_path: /_synapse/metrics\n    static_configs:\n"
	idx := map[string]int{}
	for _, w := range ws {
		job := synapsereplay.Job(w.Spec.Kind)
		idx[job]++
		cfg += fmt.Sprintf("      - {targets: [%q], labels: {job: %q, index: \"%d\"}}\n",
			strings.TrimSuffix(strings.TrimPrefix(w.URL, "http://"), "/_synapse/metrics"), job, idx[job])
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	port, err := testenv.FreePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	proc, err := testenv.StartProc(cmd)
	if err != nil {
		return fmt.Errorf("starting prometheus: %w", err)
	}
	e.cleanup = append(e.cleanup, func() { proc.Stop(syscall.SIGTERM, 10*time.Second) })
	e.urls = append(e.urls, fmt.Sprintf("http://127.0.0.1:%d/alerts   Prometheus with mxprobe's rules (deploy/prometheus)", port))
	return nil
}
