package main

import (
	"fmt"
	"strings"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// The synapse_metrics probe in the demo: the local Synapse's real metrics
// page (Dendrite's /metrics with basic auth where the demo falls back to
// it), and a worker-shaped
// Synapse replay (main, two generic workers, an event persister and a
// federation sender, each its own metrics listener serving pages cut from
// the Synapse reference pages) to show the deployment-wide and per-process
// signals, including threshold findings and a restarted worker. The demo's
// Prometheus scrapes the replayed processes too, with the jobs of Synapse's
// docs/metrics-howto.md, so the Synapse dashboard's own-series panels have
// data.
func addSynapse(e *env) error {
	// The probe reads its own servers: each answers its pages in turn,
	// so sharing them with Prometheus would make both miss pages.
	ws, err := synapsereplay.StartWorkers(nil)
	if err != nil {
		return err
	}
	e.cleanup = append(e.cleanup, func() { synapsereplay.CloseWorkers(ws) })
	var targets []map[string]any
	var names []string
	for _, w := range ws {
		targets = append(targets, map[string]any{"name": w.Spec.Name, "kind": w.Spec.Kind, "url": w.URL})
		names = append(names, w.Spec.Name)
	}
	e.probes = append(e.probes,
		e.homeserverMetricsProbe(),
		map[string]any{"name": "synapse_replay", "type": "synapse_metrics", "schedule": "@every 20s",
			"synapse": map[string]any{"targets": targets}},
	)
	e.urls = append(e.urls, fmt.Sprintf("%s  Synapse worker deployment replayed (%s)", ws[0].URL, strings.Join(names, ", ")))
	return nil
}

// demoSynapseWorkers starts the replayed Synapse processes the demo's
// Prometheus scrapes, once.
func demoSynapseWorkers(e *env) ([]*synapsereplay.WorkerServer, error) {
	if e.synapse != nil {
		return e.synapse, nil
	}
	ws, err := synapsereplay.StartWorkers(nil)
	if err != nil {
		return nil, err
	}
	e.cleanup = append(e.cleanup, func() { synapsereplay.CloseWorkers(ws) })
	e.synapse = ws
	return ws, nil
}

// homeserverMetricsProbe scrapes the demo homeserver's own metrics page.
func (e *env) homeserverMetricsProbe() map[string]any {
	if s := e.synapseHS; s != nil {
		return map[string]any{"name": "synapse", "type": "synapse_metrics", "schedule": "@every 15s",
			"synapse": map[string]any{"url": s.MetricsURL}}
	}
	return map[string]any{"name": "dendrite_metrics", "type": "synapse_metrics", "schedule": "@every 15s",
		"synapse": map[string]any{
			"url": e.dendrite.URL + "/metrics",
			"basic_auth": map[string]any{
				"username": testenv.MetricsUser, "password": testenv.MetricsPassword,
			},
		}}
}
