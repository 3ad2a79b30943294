package main

import (
	"context"
	"fmt"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
)

// On Synapse the demo meets Synapse's own rate limiters with their default
// settings; on Dendrite it probes through a reverse proxy that applies
// them (internal/testenv/synlimit), so the demo meets the 429s a real
// Synapse would answer. mxprobe's default schedules and its login budget
// keep it clear of them. The 429s are printed at exit.
func addRateLimits(e *env) error {
	if s := e.synapseHS; s != nil {
		e.cleanup = append(e.cleanup, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if n, err := s.Count(ctx, "synapse_http_server_responses_total", `code="429"`); err == nil {
				fmt.Printf("Synapse answered %g request(s) with 429 (its default rate limits)\n", n)
			}
		})
		return nil
	}
	lim, err := synlimit.Start(synlimit.Options{Upstream: e.dendrite.URL, ServerName: e.dendrite.ServerName})
	if err != nil {
		return fmt.Errorf("starting the Synapse rate limiter: %w", err)
	}
	e.cleanup = append(e.cleanup, func() {
		refusals := lim.Refusals()
		fmt.Printf("Synapse rate limiter: %d request(s) refused with 429; allowed %v\n", len(refusals), lim.Allowed())
		for _, r := range refusals {
			fmt.Printf("  429 by %s for %s on %s %s (retry after %s)\n", r.Limiter, r.Key, r.Method, r.Path, r.Retry)
		}
		lim.Close()
	})
	e.config["global"].(map[string]any)["homeserver_url"] = lim.URL
	e.urls = append(e.urls, fmt.Sprintf("Synapse rate limiter (Synapse's default limits) %s in front of Dendrite %s", lim.URL, e.dendrite.URL))
	return nil
}
