package main

import (
	"context"
	"fmt"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/probes"
)

// wire_web plugs the engine, the run history and the web settings of the
// configuration into the API, /probe and the status page.

// errNotReady: a request came before the first configuration.
const errNotReady = constError("the daemon has not loaded its configuration yet")

// daemonRunner answers for the engine once a configuration is in force.
type daemonRunner struct{ d *daemon }

func (r daemonRunner) Run(ctx context.Context, probe, tenant string) (probes.Result, error) {
	if r.d.config() == nil {
		return probes.Result{}, errNotReady
	}
	return r.d.engine.Run(ctx, probe, tenant)
}

func (r daemonRunner) Lookup(probe, tenant string) (*probes.Job, error) {
	if r.d.config() == nil {
		return nil, errNotReady
	}
	return r.d.engine.Lookup(probe, tenant)
}

func (r daemonRunner) Jobs() []*probes.Job {
	if r.d.config() == nil {
		return nil
	}
	return r.d.engine.Jobs()
}

// webSettings returns the web settings of the configuration in force.
func (d *daemon) webSettings() web.Settings {
	if s := d.webSet.Load(); s != nil {
		return *s
	}
	return web.Settings{}
}

// webSettingsFor derives web.Settings from cfg, reading the token files
// once per configuration (not per request); a token file that cannot be
// read rejects the configuration.
func webSettingsFor(cfg *config.Config) (web.Settings, error) {
	tok, err := cfg.Web.Token()
	if err != nil {
		return web.Settings{}, fmt.Errorf("web.api_token_file: %w", err)
	}
	mtok, err := cfg.Web.MetricsTokenValue()
	if err != nil {
		return web.Settings{}, fmt.Errorf("web.metrics_token_file: %w", err)
	}
	proxies, _ := cfg.Web.Proxies() // validated at load
	names := make(map[string]string, len(cfg.Tenants))
	for _, t := range cfg.Tenants {
		names[t.ID] = t.Name
	}
	return web.Settings{
		Token:          tok,
		ProtectReads:   cfg.Web.ProtectReads,
		MetricsToken:   mtok,
		ProbeAnonymous: cfg.Web.ProbeAnonymousModules,
		RunFloor:       cfg.Web.Floor().D(),
		CookieSecure:   cfg.Web.CookieSecure,
		TrustedProxies: proxies,
		Title:          cfg.Web.Title,
		SparklineRuns:  cfg.Web.SparklineRuns,
		Refresh:        cfg.Web.Refresh().D(),
		TenantNames:    names,
	}, nil
}
