package main

import (
	"fmt"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// The synapse_metrics probe in the demo: the local Dendrite's real /metrics
// (basic auth; the live HTTP path and process signals), and a replay of the
// Synapse reference pages (healthy, healthy, degraded, cycling) to show the
// Synapse-specific signals, including a threshold failure and a counter reset.
func init() {
	hooks = append(hooks, func(e *env) error {
		replay, err := synapsereplay.Start("127.0.0.1:0")
		if err != nil {
			return err
		}
		e.cleanup = append(e.cleanup, replay.Close)
		e.probes = append(e.probes,
			map[string]any{"name": "dendrite_metrics", "type": "synapse_metrics", "schedule": "@every 15s",
				"synapse": map[string]any{
					"url": e.dendrite.URL + "/metrics",
					"basic_auth": map[string]any{
						"username": testenv.MetricsUser, "password": testenv.MetricsPassword,
					},
				}},
			map[string]any{"name": "synapse_replay", "type": "synapse_metrics", "schedule": "@every 20s",
				"synapse": map[string]any{"url": replay.URL}},
		)
		e.urls = append(e.urls, fmt.Sprintf("%s  Synapse reference pages replayed (healthy, healthy, degraded, ...)", replay.URL))
		return nil
	})
}
