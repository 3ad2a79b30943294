package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/common/version"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/shard"
)

// daemon is `mxprobe serve`: config → scheduler → probes → sinks. Its
// parts are made once here; each configuration is assembled (assemble.go)
// and committed whole.
type daemon struct {
	cli     *cli
	logger  *slog.Logger
	env     *env
	stores  *stores
	history *history.Store // = stores.history
	metrics *metrics.Metrics
	web     *web.Server
	engine  *probes.Engine
	skipped *skippedTenants
	ready   atomic.Bool

	// loadSlot serialises loads (reading and assembling a configuration):
	// a channel of one, so a load queued behind a hung one gives up at its
	// deadline instead of waiting forever.
	loadSlot chan struct{}
	reloadMu sync.Mutex // serialises commit and shutdown
	closing  bool       // set by shutdown under reloadMu: no commit after it
	cfg      atomic.Pointer[config.Config]
	webSet   atomic.Pointer[web.Settings]
	sched    *probes.Scheduler
	jitter   float64
	// stop functions run at shutdown, after the last probe returned.
	stops []func()
}

func newDaemon(c *cli, logger *slog.Logger) (*daemon, error) {
	sh := c.shard
	if sh.Count < 1 {
		sh = shard.Shard{Index: 0, Count: 1}
	}
	d := &daemon{cli: c, logger: logger, env: &env{logger: logger, shard: sh}, loadSlot: make(chan struct{}, 1)}
	d.stores = newStores(mxclient.NewHTTPClientAs(userAgent()), os.Getenv)
	d.stores.provideJournals(logger)
	d.history = history.New(60)
	d.stores.history = d.history
	d.metrics = metrics.New()
	d.web = web.New(web.Options{
		Registry:        d.metrics.Registry,
		Metrics:         d.metrics.Handler(logger),
		Reload:          d.reload,
		Ready:           d.ready.Load,
		Logger:          logger,
		EnableLifecycle: c.web.lifecycle,
		ReadTimeout:     c.web.readTimeout,
		MaxConnections:  c.web.maxConnections,
	})
	for name, pt := range d.env.probeTypes() {
		if pt.metrics != nil {
			if err := pt.metrics(d.metrics); err != nil {
				return nil, fmt.Errorf("probe type %s: metrics: %w", name, err)
			}
		}
	}
	var err error
	if d.skipped, err = newSkippedTenants(d.metrics.Registry); err != nil {
		return nil, err
	}
	if err := d.metrics.Registry.Register(newShardInfo(sh, logger)); err != nil {
		return nil, err
	}
	av := alertsView{d.stores}
	if err := d.metrics.Registry.Register(av); err != nil {
		return nil, err
	}
	d.web.SetAlerts(av)
	d.web.Enable(web.Features{Runner: daemonRunner{d}, Results: d.stores.history, Settings: d.webSettings})
	d.stops = append(d.stops, av.stop)
	d.engine = probes.NewEngine(1, d.metrics, d.stores.history, budgetSkipLog(logger), probes.SinkFunc(av.observe))
	return d, nil
}

// config returns the configuration in force.
func (d *daemon) config() *config.Config { return d.cfg.Load() }

// reload reads the configuration, assembles it and commits it, giving up
// after --config.reload-timeout; a configuration that cannot be read or
// assembled in time changes nothing and is reported (log,
// mxprobe_config_last_reload_successful 0). The work runs in a goroutine of
// its own: a load that never ends (a secret file on a hung mount) leaves the
// caller, the main loop and shutdown free, and its result is dropped
// whenever it comes.
func (d *daemon) reload() error {
	timeout := d.cli.reloadTimeout
	if timeout <= 0 {
		timeout = defaultReloadTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go d.load(ctx, done)
	select {
	case err := <-done:
		if err != errReloadDropped || ctx.Err() == nil {
			return err
		}
	case <-ctx.Done():
	}
	// load decides to apply or drop under reloadMu and reports while
	// holding it: with the lock, either its answer is there, or it has not
	// decided yet and will drop (ctx is over). The failure is reported
	// under the lock too, so it cannot overwrite a later reload's success.
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	select {
	case err := <-done:
		if err != errReloadDropped {
			return err
		}
	default:
	}
	err := fmt.Errorf("reading and assembling the configuration took longer than %s (--config.reload-timeout)", timeout)
	d.metrics.SetReload(false)
	d.logger.Error("configuration not loaded; the previous one stays in force", "file", d.cli.configFile, "err", err)
	return err
}

// errReloadDropped: a load finished after its reload gave up, or during
// shutdown; nothing was applied.
const errReloadDropped = constError("the reload was given up; nothing applied")

// load is reload's work; it sends its answer to done. loadSlot serialises
// loads; reloadMu is held only to decide and commit, so shutdown never
// waits on a load.
func (d *daemon) load(ctx context.Context, done chan<- error) {
	select {
	case d.loadSlot <- struct{}{}:
		defer func() { <-d.loadSlot }()
	case <-ctx.Done():
		done <- errReloadDropped
		return
	}
	if ctx.Err() != nil {
		done <- errReloadDropped
		return
	}
	cfg, err := config.Load(d.cli.configFile, os.Getenv, d.env.kinds()...)
	var rt *runtime
	unchanged := err == nil && d.unchanged(cfg)
	if err == nil && !unchanged {
		d.stores.openState(cfg, d.logger)
		rt, err = assemble(cfg, d.env, d.stores)
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if ctx.Err() != nil || d.closing {
		d.logger.Debug("a configuration load finished after its reload gave up; dropped", "file", d.cli.configFile)
		done <- errReloadDropped
		return
	}
	done <- d.apply(cfg, rt, unchanged, err)
}

// apply reports a load's outcome and commits its runtime. The caller
// holds reloadMu.
func (d *daemon) apply(cfg *config.Config, rt *runtime, unchanged bool, err error) error {
	// Parsing the file built its whole YAML node tree (some 2.5 KB per
	// tenant: 64 MB for 25,000), garbage once the load is over; the
	// runtime would keep that memory for minutes before giving it back,
	// and an idle daemon's resident set is what it holds. A load is rare:
	// return it now.
	defer debug.FreeOSMemory()
	d.metrics.SetReload(err == nil)
	if err != nil {
		d.logger.Error("configuration not loaded; the previous one stays in force", "file", d.cli.configFile, "err", err)
		return err
	}
	if unchanged {
		d.logger.Debug("configuration unchanged; nothing to apply", "file", d.cli.configFile)
	} else {
		d.commit(rt)
	}
	d.logger.Info("configuration loaded", "file", d.cli.configFile, "tenants", len(cfg.Tenants), "probes", len(cfg.Probes))
	for _, f := range config.CheckBudget(cfg) {
		d.logger.Warn("the schedules would exceed a homeserver rate limit", "limiter", f.Limiter, "account", f.Account,
			"expected_per_hour", fmt.Sprintf("%.1f", f.Expected), "allowed_per_hour", fmt.Sprintf("%.1f", f.Allowed), "fix", f.Fix)
	}
	return nil
}

// commit swaps an assembled runtime in; it cannot fail. The caller holds
// reloadMu.
func (d *daemon) commit(rt *runtime) {
	cfg := rt.cfg
	commitLogin(d.stores.auth, rt, d.stores.state)
	d.commitAlerts(rt)
	d.skipped.commit(cfg, d)
	ws := rt.web
	d.webSet.Store(&ws)
	d.cfg.Store(cfg)
	d.engine.SetConcurrency(cfg.Global.Concurrency)
	d.engine.SetJobs(rt.jobs)
	d.metrics.SetConfigured(rt.jobs)
	keep := map[history.Key]bool{}
	for _, j := range rt.jobs {
		for _, s := range j.Subjects {
			keep[history.Key{Probe: j.Name, Tenant: s}] = true
		}
	}
	d.stores.history.Prune(func(k history.Key) bool { return keep[k] })
	d.stores.history.SetSize(cfg.Global.HistorySize)
	// The schedule keeps its phase across reloads (see Scheduler.Update):
	// only a new jitter fraction restarts it.
	if d.sched != nil && d.jitter != cfg.Global.JitterFraction() {
		d.sched.Stop()
		d.sched = nil
	}
	if d.sched == nil {
		d.jitter = cfg.Global.JitterFraction()
		d.sched = probes.NewScheduler(d.engine, d.jitter)
		d.sched.Start(rt.jobs)
	} else {
		d.sched.Update(rt.jobs)
	}
}

// gcPercent is the daemon's garbage collection target (GOGC) unless the
// environment sets one. The daemon's heap is mostly state that lives as
// long as it does (per-tenant series, history, sessions) while each run's
// garbage is small and short-lived: at Go's default of 100 the heap grew
// to twice that state before a collection, so 25,000 tenants took 280 MB
// of RSS for some 115 MB of state. At 20 the same benchmark peaks at
// 142 MB; collections come five times as often, which costs about a fifth
// more CPU per run (1.25 against 1.08 ms, BenchmarkScale25000Tenants,
// docs/bench.md). An idle daemon's heap is small and collects rarely
// either way.
const gcPercent = 20

func serve(c *cli, logger *slog.Logger) int {
	logger.Info("starting mxprobe", "version", version.Info(), "build", version.BuildContext())
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
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
	if c.webFlags != nil && c.webFlags.WebListenAddresses != nil {
		warnOpenAPI(logger, *c.webFlags.WebListenAddresses, d.webSettings().Token)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	webErr := make(chan error, 1)
	go func() { webErr <- d.web.Serve(ctx, c.webFlags) }()
	// Start-up over (first runs and scrapes included), most of the binary
	// is cold: footprint_linux.go.
	pageOut := time.AfterFunc(pageOutAfter, func() {
		logger.Debug("binary pages paged out", "bytes", pageOutBinary(logger))
	})
	defer pageOut.Stop()

	code := 0
	// Reloads run beside the loop, one at a time; a SIGHUP during one is
	// taken once it is over.
	reloaded := make(chan struct{}, 1)
	reloading, again := false, false
	startReload := func() {
		reloading = true
		go func() {
			_ = d.reload()
			reloaded <- struct{}{}
		}()
	}
loop:
	for {
		select {
		case <-hup:
			if reloading {
				again = true
				continue
			}
			startReload()
		case <-reloaded:
			reloading = false
			if again {
				again = false
				startReload()
			}
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
	d.closing = true
	if d.sched != nil {
		d.sched.Stop()
	}
	grace := 10 * time.Second
	if cfg := d.config(); cfg != nil {
		grace = cfg.Global.ShutdownGrace.D()
	}
	d.engine.Shutdown(grace)
	// Sessions kept in data_dir stay valid for the next start (ending
	// them would cost every account a full login after a restart);
	// without a data_dir the daemon ends what it holds.
	if d.stores.state == nil {
		revokeHeld(d.stores.auth, d.logger, slog.LevelInfo)
	} else {
		// Appends are not synced one by one (see statelog.Log.Sync).
		_ = d.stores.state.Close()
	}
	// Runs are over: the journals' logs are synced, and removed when empty.
	_ = d.stores.journals.Close()
	for i := len(d.stops) - 1; i >= 0; i-- {
		d.stops[i]()
	}
}
