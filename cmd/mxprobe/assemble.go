package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/probetype"
	"github.com/mxprobe/mxprobe/probes/shard"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

// The daemon is put together in one place: assemble builds everything a
// configuration needs (jobs and their probers, login methods and budget,
// notifiers, alert rules, the web handlers' view) from the configuration,
// the process environment and the long-lived stores, without changing
// anything that runs; commit (serve.go) swaps the result in. A configuration
// that assemble rejects changes nothing.

// stores are the long-lived state of a process, created once and kept
// across configuration reloads.
type stores struct {
	http    *http.Client
	auth    *auth.Manager  // login sessions, login budgets, the device instance
	mas     *auth.MASCache // MAS discovery and dynamic client registrations
	synapse *synapse.Store // the previous scrape of every synapse_metrics target
	history *history.Store // recent runs (daemon)
	// alerts holds alert states and silences (daemon); the first committed
	// configuration creates it, since its state file comes from there.
	alerts atomic.Pointer[alerts.Manager]
	// deps are the services above that probe types may need, by type.
	deps *probetype.Deps
	// state keeps sessions and login budgets across restarts in data_dir
	// (daemon only; nil without a data_dir, and for `mxprobe run`, which
	// must not take the daemon's sessions). The first configuration opens
	// it, as it fixes the instance id.
	state *auth.FileStore
	// journals are the room journals, kept across reloads.
	journals *matrix.Journals
}

// budgetStore is where new login budgets keep their spend (nil: nowhere).
func (st *stores) budgetStore() auth.BudgetStore {
	if st.state == nil {
		return nil
	}
	return st.state
}

// openState opens the daemon's state store in cfg's data_dir, once: a
// restarted daemon finds its sessions and its login budgets' spend there.
func (st *stores) openState(cfg *config.Config, logger *slog.Logger) {
	if st.state != nil || cfg.Global.DataDir == "" {
		return
	}
	st.state = &auth.FileStore{Dir: cfg.Global.DataDir, Logger: logger.With("component", "login-state")}
}

// probeTypes is the process's probe type registry.
func (e *env) probeTypes() map[string]probeType {
	if e.types == nil {
		return probeTypes()
	}
	return e.types
}

func newStores(httpc *http.Client, getenv func(string) string) *stores {
	st := &stores{
		http:    httpc,
		auth:    auth.NewManager(httpc),
		mas:     auth.NewMASCache(),
		synapse: synapse.NewStore(),
		deps:    &probetype.Deps{},
	}
	probetype.Provide(st.deps, st.auth)
	probetype.Provide(st.deps, st.synapse)
	if crash := crashHook(getenv); crash != nil {
		probetype.Provide(st.deps, crash) // a build for crash tests only
	}
	return st
}

// provideJournals gives the round trips the process's room journals, which
// log their damaged files with the process's logger; close them at exit.
func (st *stores) provideJournals(logger *slog.Logger) {
	st.journals = &matrix.Journals{Logger: logger.With("component", "room-journal")}
	probetype.Provide(st.deps, st.journals)
}

// env is what the command line fixes for every configuration of a process.
type env struct {
	logger *slog.Logger
	// types is the probe type registry (nil: probeTypes()).
	types map[string]probeType
	// shard is this replica's share of the tenants (0 of 1: all of them).
	shard shard.Shard
}

// runtime is one assembled configuration, ready to commit.
type runtime struct {
	cfg  *config.Config
	jobs []*probes.Job
	// Login: the whole method set, the login budgets of password logins
	// and of MAS logins (nil: none; the one in force when unchanged, so its
	// window stays).
	methods   map[string]auth.Method
	budget    *auth.Budget
	masBudget *auth.Budget

	// Daemon only. Exactly one of alertsPlan (for the running manager) and
	// newAlerts (the first configuration's manager, not started) is set.
	alertsPlan *alerts.Plan
	newAlerts  *alerts.Manager
	web        web.Settings
}

// assemble builds the daemon's runtime for cfg. It reads the stores but
// changes none of them.
func assemble(cfg *config.Config, e *env, st *stores) (*runtime, error) {
	rt, err := assembleProbes(cfg, e, st)
	if err != nil {
		return nil, err
	}
	if rt.web, err = webSettingsFor(cfg); err != nil {
		return nil, err
	}
	ns, err := buildNotifiers(cfg, e)
	if err != nil {
		return nil, err
	}
	if m := st.alerts.Load(); m != nil {
		rt.alertsPlan, err = m.PrepareJobs(cfg, ns, rt.jobs)
	} else {
		rt.newAlerts, err = alerts.New(alerts.Options{Config: cfg, Notifiers: ns,
			Logger: e.logger.With("component", "alerts"), Jobs: rt.jobs})
	}
	if err != nil {
		return nil, err
	}
	return rt, nil
}

// assembleProbes builds the jobs and the login side of cfg (all that
// `mxprobe run` needs).
func assembleProbes(cfg *config.Config, e *env, st *stores) (*runtime, error) {
	rt := &runtime{cfg: cfg}
	rt.methods = auth.BaseMethods()
	for name, m := range auth.MASMethods(cfg.MAS, st.mas) {
		rt.methods[name] = m
	}
	rt.budget = loginBudget(cfg, st.auth, st.budgetStore())
	rt.masBudget = masLoginBudget(cfg, st.auth, st.budgetStore())
	types := e.probeTypes()
	b := &builder{cfg: cfg, env: e, st: st}
	// Every probe's problems are reported at once, one per line, as the
	// configuration's own are.
	var errs config.Errors
	fail := func(err error) { errs = append(errs, strings.Split(err.Error(), "\n")...) }
	for i := range cfg.Probes {
		p := &cfg.Probes[i]
		pt, ok := types[p.Type]
		if !ok {
			fail(fmt.Errorf("probe %q: type %q is not available in this build", p.Name, p.Type))
			continue
		}
		bad := false
		for _, k := range p.SettingsKeys() {
			if pt.kind == nil && k != pt.settingsKey { // kinds' keys: checked by the configuration
				fail(cfg.UnknownSettings(p, k))
				bad = true
			}
		}
		if bad {
			continue
		}
		pr, err := pt.build(b, p)
		if err != nil {
			if pt.settingsKey == "" { // probetype errors name the probe and line
				err = fmt.Errorf("probe %q: %w", p.Name, err)
			}
			fail(err)
			continue
		}
		subjects := []string{""}
		if p.PerTenant() {
			subjects = subjects[:0]
			for _, t := range cfg.TenantsFor(p) {
				subjects = append(subjects, t.ID)
			}
			subjects = e.shard.Filter(subjects)
			sort.Strings(subjects)
		}
		rt.jobs = append(rt.jobs, &probes.Job{
			Name: p.Name, Type: p.Type, Schedule: p.Schedule.Schedule, Timeout: p.Timeout.D(),
			Subjects: subjects, Disabled: p.Disabled, Prober: pr,
			FirstRoundSpread: config.FirstRoundSpread(cfg, p),
		})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rt, nil
}

// commitLogin installs the login side of rt on the manager: the method set
// at once; sessions, caches and (when unchanged) the budget's window stay.
// A manager without a device instance gets the daemon's (data_dir).
func commitLogin(m *auth.Manager, rt *runtime, state *auth.FileStore) {
	if m.Instance == "" {
		m.Instance = daemonInstance(rt.cfg)
		if state != nil {
			// Sessions of this instance's devices, kept by the last run.
			m.Store = state
			m.Restore()
		}
	}
	m.SetMethods(rt.methods)
	if rt.budget != m.BudgetFor(config.MethodPassword) {
		m.SetBudget(rt.budget, config.MethodPassword)
	}
	if rt.masBudget != m.BudgetFor(config.MethodMASOIDC) || rt.masBudget != m.BudgetFor(config.MethodMASCompatSSO) {
		m.SetBudget(rt.masBudget, masBudgetMethods()...)
	}
}

// daemonInstance is the daemon's instance id: kept in data_dir (stable
// across restarts), else derived from the host name.
func daemonInstance(cfg *config.Config) string {
	if dir := cfg.Global.DataDir; dir != "" {
		if id, err := auth.InstanceFromDir(dir); err == nil {
			return id
		}
	}
	host, _ := os.Hostname()
	return "h-" + host
}
