package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
)

// wire_web plugs the engine, the run history and the web settings of the
// configuration into the API, /probe and the status page.
func init() {
	startHooks = append(startHooks, func(d *daemon) error {
		ws := &webSettings{d: d}
		d.web.Enable(web.Features{
			Runner:   daemonRunner{d},
			Results:  d.history,
			Settings: ws.get,
		})
		d.reloaders = append(d.reloaders, func(cfg *config.Config) error {
			if _, err := cfg.Web.Token(); err != nil {
				return fmt.Errorf("web.api_token_file: %w", err)
			}
			if _, err := cfg.Web.MetricsTokenValue(); err != nil {
				return fmt.Errorf("web.metrics_token_file: %w", err)
			}
			return nil
		})
		return nil
	})
}

// daemonRunner resolves the engine at request time: start hooks run before
// the daemon creates it.
type daemonRunner struct{ d *daemon }

var errNotReady = errors.New("the daemon has not loaded its configuration yet")

func (r daemonRunner) Run(ctx context.Context, probe, tenant string) (probes.Result, error) {
	if r.d.engine == nil || r.d.config() == nil {
		return probes.Result{}, errNotReady
	}
	return r.d.engine.Run(ctx, probe, tenant)
}

func (r daemonRunner) Lookup(probe, tenant string) (*probes.Job, error) {
	if r.d.engine == nil || r.d.config() == nil {
		return nil, errNotReady
	}
	return r.d.engine.Lookup(probe, tenant)
}

func (r daemonRunner) Jobs() []*probes.Job {
	if r.d.engine == nil || r.d.config() == nil {
		return nil
	}
	return r.d.engine.Jobs()
}

// webSettings derives web.Settings from the config in force, once per config
// (the token file is read at load, not per request).
type webSettings struct {
	d *daemon

	mu  sync.Mutex
	cfg *config.Config
	st  web.Settings
}

func (w *webSettings) get() web.Settings {
	cfg := w.d.config()
	if cfg == nil {
		return web.Settings{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if cfg != w.cfg {
		w.cfg, w.st = cfg, settingsFrom(cfg, w.d)
	}
	return w.st
}

func settingsFrom(cfg *config.Config, d *daemon) web.Settings {
	tok, err := cfg.Web.Token()
	if err != nil {
		// Fail closed: a token that cannot be read locks the API rather
		// than opening it. (The reload hook rejects such a config first.)
		d.logger.Error("web.api_token_file cannot be read; the API refuses changes", "err", err)
		tok = fmt.Sprintf("\x00unreadable-%p", cfg)
	}
	mtok, err := cfg.Web.MetricsTokenValue()
	if err != nil {
		d.logger.Error("web.metrics_token_file cannot be read; only the API token opens /metrics", "err", err)
		mtok = ""
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
	}
}
