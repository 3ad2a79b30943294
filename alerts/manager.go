package alerts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

// Delivery is the notification log of one alert instance at one notifier.
type Delivery struct {
	// Wanted is set once a firing notification was due (not muted), so the
	// resolve is delivered even if the firing one never got through.
	Wanted   bool      `json:"wanted,omitempty"`
	Firing   bool      `json:"firing,omitempty"`
	Resolved bool      `json:"resolved,omitempty"`
	Ref      string    `json:"ref,omitempty"`
	LastSent time.Time `json:"last_sent,omitzero"`
}

// entry is one (rule, tenant): its evaluation memory and current alert.
type entry struct {
	Rule       string               `json:"rule"`
	Tenant     string               `json:"tenant"`
	Probe      string               `json:"probe"`
	State      State                `json:"state"`
	ActiveAt   time.Time            `json:"active_at,omitzero"`
	FiredAt    time.Time            `json:"fired_at,omitzero"`
	ResolvedAt time.Time            `json:"resolved_at,omitzero"`
	Good       int                  `json:"good,omitempty"`
	LastBad    bool                 `json:"last_bad,omitempty"`
	Value      float64              `json:"value"`
	Class      string               `json:"class,omitempty"`
	Step       string               `json:"step,omitempty"`
	Error      string               `json:"error,omitempty"`
	Deliveries map[string]*Delivery `json:"deliveries,omitempty"`
	Series     series               `json:"series"`
}

func entryKey(rule, tenant string) string { return rule + "\x00" + tenant }

// Options configure a Manager.
type Options struct {
	Config    *config.Config
	Notifiers []Notifier
	Logger    *slog.Logger
	// Now is the clock of rule evaluation, silences and windows (tests
	// inject a fake one). Deliveries always use real time.
	Now func() time.Time
	// TenantFilter narrows the tenants this process watches (sharding),
	// when no Jobs are given.
	TenantFilter func([]string) []string
	// Jobs are the jobs built for Config (see PrepareJobs).
	Jobs []*probes.Job
	// PollInterval is how often delivery workers look for due work besides
	// being woken (default 1s).
	PollInterval time.Duration
	// BaseBackoff is the first retry delay (default 1s).
	BaseBackoff time.Duration
}

type window struct {
	cfg   config.MaintenanceWindow
	sched cron.Schedule
}

// Manager is the alert engine: a probes.Sink.
type Manager struct {
	logger       *slog.Logger
	now          func() time.Time
	tenantFilter func([]string) []string
	poll         time.Duration
	baseBackoff  time.Duration
	metrics      *collector

	mu         sync.Mutex
	cfg        *config.Config
	rules      map[string]*rule
	ruleOrder  []string
	entries    map[string]*entry
	silences   []Silence // from config and the API
	windows    []window
	routes     []config.Route
	intervals  map[string]time.Duration
	subjects   map[string][]string
	statusURL  string
	dirty      bool
	started    time.Time
	notifiers  map[string]*worker
	nfOrder    []string
	statePath  string
	LoadReport string

	saveMu sync.Mutex

	runMu    sync.Mutex
	running  bool
	stop     chan struct{}
	reset    chan time.Duration // a new evaluation interval for the ticker
	interval time.Duration
	wg       sync.WaitGroup
}

// New builds a manager from the configuration and loads its persisted state.
// A corrupt or outdated state file is reported (LoadReport, log) and
// replaced, never fatal.
func New(opts Options) (*Manager, error) {
	if opts.Config == nil {
		return nil, errors.New("alerts: no configuration")
	}
	m := &Manager{
		logger:       opts.Logger,
		now:          opts.Now,
		tenantFilter: opts.TenantFilter,
		poll:         opts.PollInterval,
		baseBackoff:  opts.BaseBackoff,
		entries:      map[string]*entry{},
		notifiers:    map[string]*worker{},
	}
	if m.logger == nil {
		m.logger = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.poll <= 0 {
		m.poll = time.Second
	}
	if m.baseBackoff <= 0 {
		m.baseBackoff = time.Second
	}
	m.metrics = newCollector(m)
	m.started = m.now()
	m.statePath = opts.Config.AlertStatePath()
	m.load()
	p, err := m.PrepareJobs(opts.Config, opts.Notifiers, opts.Jobs)
	if err != nil {
		return nil, err
	}
	m.Commit(p)
	return m, nil
}

// Apply installs a new configuration and notifier set (config reload):
// Prepare, then Commit.
func (m *Manager) Apply(cfg *config.Config, notifiers []Notifier) error {
	p, err := m.Prepare(cfg, notifiers)
	if err != nil {
		return err
	}
	m.Commit(p)
	return nil
}

// Plan is a configuration checked and compiled by Prepare, ready to Commit.
type Plan struct {
	cfg         *config.Config
	notifiers   []Notifier
	rules       map[string]*rule
	order       []string
	windows     []window
	cfgSilences []Silence
	intervals   map[string]time.Duration
	subjects    map[string][]string
}

// Prepare checks and compiles cfg's rules, windows and silences and the
// notifier set, without changing anything the manager runs: an error means
// the configuration is rejected and the manager is as it was.
func (m *Manager) Prepare(cfg *config.Config, notifiers []Notifier) (*Plan, error) {
	return m.PrepareJobs(cfg, notifiers, nil)
}

// PrepareJobs is Prepare with the jobs built for cfg: the subjects and
// schedule intervals the rules watch are taken from them rather than derived
// from cfg again (nil jobs: from cfg and Options.TenantFilter).
func (m *Manager) PrepareJobs(cfg *config.Config, notifiers []Notifier, jobs []*probes.Job) (*Plan, error) {
	types := map[string]string{}
	for i := range cfg.Probes {
		types[cfg.Probes[i].Name] = cfg.Probes[i].Type
	}
	rules := map[string]*rule{}
	var order []string
	for _, rc := range cfg.Alerting.Rules {
		r := newRule(rc, types[rc.Probe])
		if r.kind == "" {
			return nil, fmt.Errorf("alert rule %q: exactly one condition is needed", rc.Name)
		}
		rules[rc.Name] = r
		order = append(order, rc.Name)
	}
	var windows []window
	for _, wc := range cfg.Alerting.MaintenanceWindows {
		s, err := cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(wc.Schedule)
		if err != nil {
			return nil, fmt.Errorf("maintenance window %q: %v", wc.Name, err)
		}
		windows = append(windows, window{cfg: wc, sched: s})
	}
	var cfgSilences []Silence
	for i, sc := range cfg.Alerting.Silences {
		s := Silence{ID: fmt.Sprintf("config-%d", i), Matchers: maps.Clone(sc.Matchers), Comment: sc.Comment, CreatedBy: "config", FromConfig: true}
		var err error
		if s.EndsAt, err = config.ParseTime(sc.EndsAt); err != nil {
			return nil, fmt.Errorf("alerting.silences[%d].ends_at: %v", i, err)
		}
		if sc.StartsAt != "" {
			if s.StartsAt, err = config.ParseTime(sc.StartsAt); err != nil {
				return nil, fmt.Errorf("alerting.silences[%d].starts_at: %v", i, err)
			}
		}
		cfgSilences = append(cfgSilences, s)
	}
	names := map[string]bool{}
	for _, n := range notifiers {
		if names[n.Name()] {
			return nil, fmt.Errorf("notifier %q: duplicate name", n.Name())
		}
		names[n.Name()] = true
	}
	intervals := map[string]time.Duration{}
	subjects := map[string][]string{}
	now := m.now()
	if jobs != nil {
		// The jobs the daemon built: their subjects are already this
		// replica's share of the tenants.
		for _, j := range jobs {
			if !j.Disabled {
				intervals[j.Name] = config.Schedule{Schedule: j.Schedule}.Interval(now)
			}
			subjects[j.Name] = j.Subjects
		}
	} else {
		for i := range cfg.Probes {
			p := &cfg.Probes[i]
			if !p.Disabled {
				intervals[p.Name] = p.Schedule.Interval(now)
			}
			var ids []string
			if p.PerTenant() {
				for _, t := range cfg.TenantsFor(p) {
					ids = append(ids, t.ID)
				}
				if m.tenantFilter != nil {
					ids = m.tenantFilter(ids)
				}
			} else {
				ids = []string{""}
			}
			subjects[p.Name] = ids
		}
	}

	return &Plan{cfg: cfg, notifiers: notifiers, rules: rules, order: order, windows: windows,
		cfgSilences: cfgSilences, intervals: intervals, subjects: subjects}, nil
}

// Commit installs a prepared configuration. Alerts of rules that still
// exist keep their state; workers of notifiers that are gone stop; a new
// evaluation_interval takes effect at once.
func (m *Manager) Commit(p *Plan) {
	cfg, notifiers, rules, order := p.cfg, p.notifiers, p.rules, p.order
	windows, cfgSilences, intervals, subjects := p.windows, p.cfgSilences, p.intervals, p.subjects
	m.mu.Lock()
	m.cfg = cfg
	m.rules, m.ruleOrder = rules, order
	m.windows = windows
	m.routes = cfg.Alerting.Routes
	m.intervals, m.subjects = intervals, subjects
	m.statusURL = strings.TrimRight(cfg.Global.ExternalURL, "/")
	kept := m.silences[:0]
	for _, s := range m.silences {
		if !s.FromConfig {
			kept = append(kept, s)
		}
	}
	m.silences = append(cfgSilences, kept...)
	inConfig := make(map[string]bool, len(cfg.Tenants))
	for _, t := range cfg.Tenants {
		inConfig[t.ID] = true
	}
	watched := map[string]map[string]bool{}
	for probe, ids := range subjects {
		watched[probe] = map[string]bool{}
		for _, id := range ids {
			watched[probe][id] = true
		}
	}
	for k, e := range m.entries {
		if _, ok := rules[e.Rule]; !ok {
			delete(m.entries, k)
			m.dirty = true
			continue
		}
		// A tenant this process no longer probes is no longer its to
		// alert on. One another shard owns since a resharding is dropped:
		// re-sending its firing alert from the state file would keep it
		// alive in Alertmanager after the new owner resolved it (the last
		// copy expires at its endsAt unless the new owner fires it). One
		// that left the configuration is resolved, so every notifier hears
		// the end of it; and an entry whose resolve is still on its way
		// stays until it is delivered.
		if w, ok := watched[e.Probe]; ok && e.Tenant != "" && !w[e.Tenant] {
			switch {
			case e.State == StateResolved && !m.resolvedDelivered(e):
			case e.State == StateFiring && !inConfig[e.Tenant]:
				e.State, e.ResolvedAt = StateResolved, m.now()
				m.logger.Info("alert resolved: the tenant left the configuration", "rule", e.Rule, "tenant", e.Tenant, "probe", e.Probe)
				m.dirty = true
			default:
				delete(m.entries, k)
				m.dirty = true
			}
		}
	}
	// Notifier workers: replace all (a reload may change secrets or URLs);
	// the delivery log lives in the entries, so nothing is lost.
	old := m.notifiers
	m.notifiers = map[string]*worker{}
	m.nfOrder = nil
	for _, n := range notifiers {
		w := newWorker(m, n, cfg)
		m.notifiers[n.Name()] = w
		m.nfOrder = append(m.nfOrder, n.Name())
	}
	m.mu.Unlock()

	m.runMu.Lock()
	running := m.running
	m.runMu.Unlock()
	for _, w := range old {
		w.halt()
	}
	if running {
		for _, w := range m.workers() {
			w.start()
		}
	}
	m.metrics.setRules(order)
	m.setInterval(evaluationInterval(cfg))
}

// Start runs the evaluation ticker and the delivery workers.
func (m *Manager) Start() {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.running {
		return
	}
	m.running = true
	m.stop = make(chan struct{})
	m.reset = make(chan time.Duration, 1)
	interval, stop, reset := m.interval, m.stop, m.reset
	for _, w := range m.workers() {
		w.start()
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case d := <-reset:
				t.Reset(d)
			case <-t.C:
				m.Tick()
			}
		}
	}()
}

// evaluationInterval is alerting.evaluation_interval, 15s when unset.
func evaluationInterval(cfg *config.Config) time.Duration {
	if d := cfg.Alerting.EvaluationInterval.D(); d > 0 {
		return d
	}
	return 15 * time.Second
}

// setInterval changes the evaluation interval, at once if running.
func (m *Manager) setInterval(d time.Duration) {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if d == m.interval {
		return
	}
	m.interval = d
	if m.running {
		select { // only the latest value matters
		case <-m.reset:
		default:
		}
		m.reset <- d
	}
}

// Notifiers are the names of the notifiers in force, in configuration order.
func (m *Manager) Notifiers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.nfOrder)
}

// EvaluationInterval is the evaluation interval in force.
func (m *Manager) EvaluationInterval() time.Duration {
	m.runMu.Lock()
	defer m.runMu.Unlock()
	return m.interval
}

// Stop ends the ticker and the workers (a delivery in flight gets until ctx
// ends) and saves the state.
func (m *Manager) Stop(ctx context.Context) {
	m.runMu.Lock()
	if m.running {
		m.running = false
		close(m.stop)
	}
	m.runMu.Unlock()
	m.wg.Wait()
	ws := m.workers()
	done := make(chan struct{})
	go func() {
		for _, w := range ws {
			w.halt()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, w := range ws {
			w.abort()
		}
		<-done
	}
	if err := m.Save(); err != nil {
		m.logger.Error("saving alert state failed", "err", err)
	}
}

// workers returns the notifier workers, taken under the lock.
func (m *Manager) workers() []*worker {
	m.mu.Lock()
	defer m.mu.Unlock()
	ws := make([]*worker, 0, len(m.notifiers))
	for _, w := range m.notifiers {
		ws = append(ws, w)
	}
	return ws
}

func (m *Manager) wake() {
	for _, w := range m.workers() {
		w.poke()
	}
}
