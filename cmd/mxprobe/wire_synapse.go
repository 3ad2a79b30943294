package main

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"

	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

// synapseStore keeps the previous scrape of every synapse_metrics target; it
// lives as long as the process, so a config reload (which rebuilds the
// probers) does not lose the baseline.
var synapseStore = synapse.NewStore()

// synapseRunWindow is set by `mxprobe run`: scrape twice, this far apart.
var synapseRunWindow time.Duration

func init() {
	builders[config.TypeSynapseMetrics] = func(d *deps, p *config.Probe) (probes.Prober, error) {
		if p.Synapse == nil || (p.Synapse.URL == "" && len(p.Synapse.Targets) == 0 && p.Synapse.DNS == nil) {
			return nil, fmt.Errorf("synapse.url is not set (configure it, synapse.targets or synapse.dns, or pass --target URL to mxprobe run)")
		}
		return &synapse.Probe{Name: p.Name, Config: p.Synapse, HTTP: d.http, Store: synapseStore, Window: synapseRunWindow}, nil
	}
	startHooks = append(startHooks, func(d *daemon) error {
		d.metrics.AddHook(metrics.NewSynapse())
		return nil
	})
	runPrepareHooks = append(runPrepareHooks, func(c *cli, cfg *config.Config, p *config.Probe) error {
		if p.Type != config.TypeSynapseMetrics {
			return nil
		}
		if c.runTarget != "" {
			if p.Synapse == nil {
				p.Synapse = &config.SynapseConfig{}
			}
			p.Synapse.URL = c.runTarget
			p.Synapse.ApplyDefaults()
		}
		if p.Synapse == nil || (p.Synapse.URL == "" && len(p.Synapse.Targets) == 0 && p.Synapse.DNS == nil) {
			return fmt.Errorf("probe %q: no target: pass --target URL (the /_synapse/metrics page)", p.Name)
		}
		w := p.Synapse.Window.D()
		if c.runWindow != "" {
			md, err := model.ParseDuration(c.runWindow)
			if err != nil || md <= 0 {
				return fmt.Errorf("--window %q: use a duration such as 15s", c.runWindow)
			}
			w = time.Duration(md)
		}
		synapseRunWindow = w
		// The run must outlast the window.
		if p.Timeout.D() < w+10*time.Second {
			p.Timeout = config.Duration(w + 10*time.Second)
		}
		return cfg.ValidateSynapse()
	})
}
