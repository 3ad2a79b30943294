package synapse

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeSynapseMetrics is the synapse_metrics probe type's name.
const TypeSynapseMetrics = "synapse_metrics"

// runSlack is how much longer than its window `mxprobe run` lets a run
// take: the two scrapes themselves.
const runSlack = 10 * time.Second

// Type is the synapse_metrics probe type: one Synapse deployment, scraped
// every 30 s by default; its settings live under the probe's `synapse:`
// key, and `mxprobe run synapse_metrics --target URL` sets their url. Its
// baselines (the previous scrape of every target) live in the process's
// *Store, so a configuration reload, which rebuilds the probers, keeps
// them. Its metrics are the mxprobe_synapse_* gauges (metrics.go).
func Type() probetype.Type {
	return probetype.Define(probetype.Def[Settings]{
		Name: TypeSynapseMetrics, Schedule: "@every 30s", Timeout: 10 * time.Second,
		SettingsKey: "synapse",
		TargetField: "url",
		Credentials: []string{"basic_auth", "bearer_token", "bearer_token_file"},
		Steps:       Steps(),
		Classes:     probes.SharedClasses(),
		Decode:      DecodeSettings,
		New: func(in probetype.Inputs, s *Settings) (probes.Prober, error) {
			st, err := probetype.Need[*Store](in)
			if err != nil {
				return nil, err
			}
			return &Probe{Name: in.Name, Config: s, HTTP: in.HTTP, Store: st, Window: s.runWindow}, nil
		},
		Metrics:    Metrics,
		PrepareRun: prepareRun,
	})
}

// Steps are the steps of synapse_metrics runs.
func Steps() []string {
	return []string{StepResolve, StepBaseline, StepScrape, StepParse, StepDerive, StepThresholds}
}

// prepareRun makes `mxprobe run` scrape twice, --window (or the
// configured synapse.window) apart, and lets the run outlast the window.
func prepareRun(_ *config.Config, p *config.Probe, s *Settings, o probetype.RunOptions) error {
	w := s.Window.D()
	if o.Window > 0 {
		w = o.Window
	}
	s.runWindow = w
	if p.Timeout.D() < w+runSlack {
		p.Timeout = config.Duration(w + runSlack)
	}
	return nil
}

// Metrics registers the mxprobe_synapse_* gauges on reg and returns what
// feeds them each synapse_metrics Result (the type's Metrics hook).
func Metrics(reg prometheus.Registerer) (probetype.Observer, error) {
	c := newCollector()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return c.observe, nil
}
