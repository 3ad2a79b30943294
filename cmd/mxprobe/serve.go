package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/common/version"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// daemon is `mxprobe serve`: config → scheduler → probes → sinks.
type daemon struct {
	cli     *cli
	logger  *slog.Logger
	deps    *deps
	metrics *metrics.Metrics
	history *history.Store
	web     *web.Server
	engine  *probes.Engine
	sched   *probes.Scheduler
	jitter  float64
	sinks   []probes.Sink
	ready   atomic.Bool

	reloadMu sync.Mutex
	cfg      atomic.Pointer[config.Config]
	// stop functions run at shutdown, after the last probe returned.
	stops []func()
	// reloaders apply each new configuration to what start hooks attached
	// to this daemon (an error rejects the reload).
	reloaders []func(cfg *config.Config) error
}

// startHooks let capabilities attach sinks, routes and state to the daemon
// before the first config load; what they attach follows later configs
// through d.reloaders (an error rejects the reload and keeps the old config).
var startHooks []func(d *daemon) error

func newDaemon(c *cli, logger *slog.Logger) (*daemon, error) {
	mxclient.UserAgent = "mxprobe/" + version.Version
	d := &daemon{cli: c, logger: logger}
	d.metrics = metrics.New()
	d.history = history.New(60)
	httpc := mxclient.NewHTTPClient()
	d.deps = &deps{auth: auth.NewManager(httpc), http: httpc, logger: logger}
	d.web = web.New(web.Options{
		Registry:        d.metrics.Registry,
		Reload:          d.reload,
		Ready:           d.ready.Load,
		Logger:          logger,
		EnableLifecycle: c.web.lifecycle,
		ReadTimeout:     c.web.readTimeout,
		MaxConnections:  c.web.maxConnections,
	})
	d.sinks = []probes.Sink{d.metrics, d.history}
	for _, h := range startHooks {
		if err := h(d); err != nil {
			return nil, err
		}
	}
	d.engine = probes.NewEngine(1, d.sinks...)
	return d, nil
}

// config returns the configuration in force.
func (d *daemon) config() *config.Config { return d.cfg.Load() }

// reload reads the configuration and swaps it in; a bad one keeps the old
// configuration running and is reported.
func (d *daemon) reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	err := d.apply()
	d.metrics.SetReload(err == nil)
	if err != nil {
		d.logger.Error("configuration not loaded; the previous one stays in force", "file", d.cli.configFile, "err", err)
		return err
	}
	cfg := d.config()
	d.logger.Info("configuration loaded", "file", d.cli.configFile, "tenants", len(cfg.Tenants), "probes", len(cfg.Probes))
	for _, f := range config.CheckBudget(cfg) {
		d.logger.Warn("the schedules would exceed a homeserver rate limit", "limiter", f.Limiter, "account", f.Account,
			"expected_per_hour", fmt.Sprintf("%.1f", f.Expected), "allowed_per_hour", fmt.Sprintf("%.1f", f.Allowed), "fix", f.Fix)
	}
	return nil
}

func (d *daemon) apply() error {
	cfg, err := config.Load(d.cli.configFile, os.Getenv)
	if err != nil {
		return err
	}
	if d.unchanged(cfg) {
		d.logger.Debug("configuration unchanged; nothing to apply", "file", d.cli.configFile)
		return nil
	}
	nd, err := newDeps(cfg, d.deps.auth, d.deps.http, d.logger)
	if err != nil {
		return err
	}
	jobs, err := buildJobs(nd)
	if err != nil {
		return err
	}
	for _, apply := range d.reloaders {
		if err := apply(cfg); err != nil {
			return err
		}
	}
	d.deps = nd
	d.cfg.Store(cfg)
	d.engine.SetConcurrency(cfg.Global.Concurrency)
	d.engine.SetJobs(jobs)
	d.metrics.SetConfigured(jobs)
	keep := map[history.Key]bool{}
	for _, j := range jobs {
		for _, s := range j.Subjects {
			keep[history.Key{Probe: j.Name, Tenant: s}] = true
		}
	}
	d.history.Prune(func(k history.Key) bool { return keep[k] })
	d.history.SetSize(cfg.Global.HistorySize)
	// The schedule keeps its phase across reloads (see Scheduler.Update):
	// only a new jitter fraction restarts it.
	if d.sched != nil && d.jitter != cfg.Global.JitterFraction() {
		d.sched.Stop()
		d.sched = nil
	}
	if d.sched == nil {
		d.jitter = cfg.Global.JitterFraction()
		d.sched = probes.NewScheduler(d.engine, d.jitter)
		d.sched.Start(jobs)
	} else {
		d.sched.Update(jobs)
	}
	return nil
}

func serve(c *cli, logger *slog.Logger) int {
	logger.Info("starting mxprobe", "version", version.Info(), "build", version.BuildContext())
	d, err := newDaemon(c, logger)
	if err != nil {
		logger.Error("start-up failed", "err", err)
		return 1
	}
	if err := d.reload(); err != nil {
		fmt.Fprintf(os.Stderr, "mxprobe: configuration errors:\n%v\n", err)
		return 1
	}
	d.ready.Store(true)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	webErr := make(chan error, 1)
	go func() { webErr <- d.web.Serve(ctx, c.webFlags) }()

	code := 0
loop:
	for {
		select {
		case <-hup:
			_ = d.reload()
		case err := <-webErr:
			if err != nil {
				logger.Error("web server failed", "err", err)
				code = 1
			}
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	logger.Info("shutting down", "in_flight", d.engine.InFlight())
	d.ready.Store(false)
	d.shutdown()
	stop()
	select {
	case <-webErr:
	case <-time.After(6 * time.Second):
	}
	return code
}

// shutdown stops the schedule, gives runs in flight the grace period, then
// cancels them, and runs the stop hooks.
func (d *daemon) shutdown() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.sched != nil {
		d.sched.Stop()
	}
	grace := 10 * time.Second
	if cfg := d.config(); cfg != nil {
		grace = cfg.Global.ShutdownGrace.D()
	}
	d.engine.Shutdown(grace)
	revokeHeld(d.deps.auth, d.logger, slog.LevelInfo)
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
}
