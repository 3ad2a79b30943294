package main

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

// The synapse_metrics probe type. Its baselines (the previous scrape of
// every target) live in the process's stores, so a config reload (which
// rebuilds the probers) does not lose them.
func buildSynapse(b *builder, p *config.Probe) (probes.Prober, error) {
	if p.Synapse == nil || (p.Synapse.URL == "" && len(p.Synapse.Targets) == 0 && p.Synapse.DNS == nil) {
		return nil, fmt.Errorf("synapse.url is not set (configure it, synapse.targets or synapse.dns, or pass --target URL to mxprobe run)")
	}
	return &synapse.Probe{Name: p.Name, Config: p.Synapse, HTTP: b.st.http, Store: b.st.synapse, Window: b.env.synapseWindow}, nil
}

func synapseMetrics(m *metrics.Metrics) error {
	m.AddHook(metrics.NewSynapse(config.TypeSynapseMetrics))
	return nil
}

// prepareRunSynapse takes --target and --window for `mxprobe run`.
func prepareRunSynapse(c *cli, e *env, cfg *config.Config, p *config.Probe) error {
	if c.runTarget != "" {
		if p.Synapse == nil {
			p.Synapse = &config.SynapseConfig{}
		}
		if !sameOrigin(p.Synapse.URL, c.runTarget) {
			// The configured credentials are for the configured page's
			// origin, not for whatever --target names.
			p.Synapse.BasicAuth, p.Synapse.BearerToken, p.Synapse.BearerTokenFile = nil, "", ""
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
	e.synapseWindow = w
	// The run must outlast the window.
	if p.Timeout.D() < w+10*time.Second {
		p.Timeout = config.Duration(w + 10*time.Second)
	}
	return cfg.ValidateSynapse()
}
