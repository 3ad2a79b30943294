package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"

	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
)

// deps are what probe builders may use. They outlive config reloads.
type deps struct {
	cfg    *config.Config
	auth   *auth.Manager
	http   *http.Client
	logger *slog.Logger
}

// builder makes the prober of one configured probe.
type builder func(d *deps, p *config.Probe) (probes.Prober, error)

// builders maps probe types to their builders; capabilities register theirs
// in init functions of their own wire_*.go files.
var builders = map[string]builder{
	config.TypeVersions: func(d *deps, p *config.Probe) (probes.Prober, error) {
		return &matrix.VersionsProbe{Name: p.Name, HTTP: d.http, Config: d.cfg}, nil
	},
	config.TypeLogin: func(d *deps, p *config.Probe) (probes.Prober, error) {
		return &auth.LoginProbe{Name: p.Name, Manager: d.auth, Config: d.cfg, FullLoginInterval: p.FullLoginInterval()}, nil
	},
}

// managerHooks configure the shared login manager for a configuration
// (register the MAS login methods, ...). They run wherever deps are built.
var managerHooks []func(m *auth.Manager, cfg *config.Config) error

// newDeps builds the probe dependencies for cfg around a shared manager.
func newDeps(cfg *config.Config, m *auth.Manager, httpc *http.Client, logger *slog.Logger) (*deps, error) {
	for _, h := range managerHooks {
		if err := h(m, cfg); err != nil {
			return nil, err
		}
	}
	return &deps{cfg: cfg, auth: m, http: httpc, logger: logger}, nil
}

// tenantFilters narrow the tenants this process runs (sharding).
var tenantFilters []func(ids []string) []string

// buildJobs turns the configuration into engine jobs.
func buildJobs(d *deps) ([]*probes.Job, error) {
	var jobs []*probes.Job
	for i := range d.cfg.Probes {
		p := &d.cfg.Probes[i]
		b, ok := builders[p.Type]
		if !ok {
			return nil, fmt.Errorf("probe %q: type %q is not available in this build", p.Name, p.Type)
		}
		pr, err := b(d, p)
		if err != nil {
			return nil, fmt.Errorf("probe %q: %w", p.Name, err)
		}
		subjects := []string{""}
		if p.PerTenant() {
			subjects = subjects[:0]
			for _, t := range d.cfg.TenantsFor(p) {
				subjects = append(subjects, t.ID)
			}
			for _, f := range tenantFilters {
				subjects = f(subjects)
			}
			sort.Strings(subjects)
		}
		jobs = append(jobs, &probes.Job{
			Name: p.Name, Type: p.Type, Schedule: p.Schedule.Schedule, Timeout: p.Timeout.D(),
			Subjects: subjects, Disabled: p.Disabled, Prober: pr,
		})
	}
	return jobs, nil
}
