package main

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/config"
)

// The platform as it ships: TENANTS_B64 entries mxprobe cannot probe (an
// empty id, no bot) are reported once per configuration that has them (a
// log line each, and mxprobe_tenants_skipped{reason}), never fatal. (The
// generic http probe for the platform's health endpoints is
// httpcheck.Type.)

// skippedTenants reports the TENANTS_B64 entries the configuration in force
// leaves out.
type skippedTenants struct {
	gauge *prometheus.GaugeVec
	last  string // the entries last logged (reloads hold the daemon's reload lock)
}

func newSkippedTenants(reg prometheus.Registerer) (*skippedTenants, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "mxprobe",
		Name:      "tenants_skipped",
		Help:      "TENANTS_B64 entries that are not probed, by reason (empty_id, no_bot).",
	}, []string{"reason"})
	for _, r := range config.SkipReasons() {
		g.WithLabelValues(r)
	}
	if err := reg.Register(g); err != nil {
		return nil, err
	}
	return &skippedTenants{gauge: g}, nil
}

// commit sets the gauge for cfg and logs its skipped entries when they
// differ from the last configuration's.
func (s *skippedTenants) commit(cfg *config.Config, d *daemon) {
	counts := map[string]float64{}
	lines := make([]string, 0, len(cfg.Skipped))
	for _, sk := range cfg.Skipped {
		counts[sk.Reason]++
		lines = append(lines, sk.String())
	}
	for _, r := range config.SkipReasons() {
		s.gauge.WithLabelValues(r).Set(counts[r])
	}
	if key := strings.Join(lines, "\n"); key != s.last {
		s.last = key
		for _, sk := range cfg.Skipped {
			d.logger.Warn("TENANTS_B64 entry not probed", "index", sk.Index, "id", sk.ID, "name", sk.Name, "reason", sk.Reason, "detail", sk.String())
		}
	}
}
