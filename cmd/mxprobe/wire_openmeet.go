package main

import (
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/httpcheck"
)

// The platform as it ships: TENANTS_B64 entries mxprobe cannot probe (an
// empty id, no bot) are reported once per configuration that has them (a
// log line each, and mxprobe_tenants_skipped{reason}), never fatal; and the
// generic http probe for the platform's health endpoints.
func init() {
	builders[config.TypeHTTP] = func(d *deps, p *config.Probe) (probes.Prober, error) {
		if p.HTTP == nil || p.HTTP.URL == "" {
			return nil, fmt.Errorf("http.url is not set (configure it, or pass --target URL to mxprobe run)")
		}
		return &httpcheck.Probe{Name: p.Name, Config: p.HTTP, HTTP: d.http}, nil
	}
	runPrepareHooks = append(runPrepareHooks, func(c *cli, cfg *config.Config, p *config.Probe) error {
		if p.Type != config.TypeHTTP {
			return nil
		}
		if c.runTarget != "" {
			if p.HTTP == nil {
				p.HTTP = &config.HTTPConfig{}
			}
			p.HTTP.URL = c.runTarget
			p.HTTP.ApplyDefaults()
		}
		if p.HTTP == nil || p.HTTP.URL == "" {
			return fmt.Errorf("probe %q: no target: pass --target URL", p.Name)
		}
		return cfg.ValidateHTTP()
	})
	startHooks = append(startHooks, func(d *daemon) error {
		skipped := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "mxprobe",
			Name:      "tenants_skipped",
			Help:      "TENANTS_B64 entries that are not probed, by reason (empty_id, no_bot).",
		}, []string{"reason"})
		for _, r := range config.SkipReasons() {
			skipped.WithLabelValues(r)
		}
		if err := d.metrics.Registry.Register(skipped); err != nil {
			return err
		}
		var (
			mu   sync.Mutex
			last string
		)
		d.reloaders = append(d.reloaders, func(cfg *config.Config) error {
			counts := map[string]float64{}
			lines := make([]string, 0, len(cfg.Skipped))
			for _, s := range cfg.Skipped {
				counts[s.Reason]++
				lines = append(lines, s.String())
			}
			for _, r := range config.SkipReasons() {
				skipped.WithLabelValues(r).Set(counts[r])
			}
			mu.Lock()
			defer mu.Unlock()
			if key := strings.Join(lines, "\n"); key != last {
				last = key
				for _, s := range cfg.Skipped {
					d.logger.Warn("TENANTS_B64 entry not probed", "index", s.Index, "id", s.ID, "name", s.Name, "reason", s.Reason, "detail", s.String())
				}
			}
			return nil
		})
		return nil
	})
}
