package alerts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/internal/config"
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
	// TenantFilter narrows the tenants this process watches (sharding).
	TenantFilter func([]string) []string
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
	if err := m.Apply(opts.Config, opts.Notifiers); err != nil {
		return nil, err
	}
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
	rules := map[string]*rule{}
	var order []string
	for _, rc := range cfg.Alerting.Rules {
		r := newRule(rc)
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
	for k, e := range m.entries {
		if _, ok := rules[e.Rule]; !ok {
			delete(m.entries, k)
			m.dirty = true
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

// Observe implements probes.Sink. It evaluates the rules over the result
// and returns at once: deliveries happen in the notifier workers.
func (m *Manager) Observe(res probes.Result) {
	m.mu.Lock()
	now := m.now()
	changed := false
	for _, name := range m.ruleOrder {
		r := m.rules[name]
		if !r.selects(&res) {
			continue
		}
		e := m.entry(r, res.Tenant)
		v := r.evaluate(&e.Series, &res, now)
		if !res.OK() {
			e.Class, e.Step, e.Error = string(res.Class), res.Step, truncate(res.Error, 300)
		}
		if v.known {
			if m.step(r, e, v, now) {
				changed = true
			}
		}
	}
	m.dirty = true
	m.mu.Unlock()
	if changed {
		m.wake()
		m.saveAsync()
	}
}

// Tick re-evaluates what time alone changes: staleness, `for:` durations,
// silences and maintenance windows ending, retention of resolved alerts.
func (m *Manager) Tick() {
	m.mu.Lock()
	now := m.now()
	changed := false
	for _, name := range m.ruleOrder {
		r := m.rules[name]
		if r.kind == "stale" {
			for _, t := range m.subjects[r.cfg.Probe] {
				if r.tenants != nil && !r.tenants[t] {
					continue
				}
				e := m.entry(r, t)
				if e.Series.LastSeen.IsZero() {
					// Never seen since start: count from the start.
					e.Series.LastSeen = m.started
				}
				v := r.staleVerdict(&e.Series, now, m.intervals[r.cfg.Probe])
				if v.known && m.step(r, e, v, now) {
					changed = true
				}
			}
		}
	}
	for k, e := range m.entries {
		r := m.rules[e.Rule]
		if e.State == StatePending && e.LastBad && now.Sub(e.ActiveAt) >= r.cfg.For.D() {
			m.fire(e, now)
			changed = true
		}
		if e.State == StateResolved && now.Sub(e.ResolvedAt) > m.cfg.Alerting.ResolvedRetention.D() && m.resolvedDelivered(e) {
			e.State = StateInactive
			e.Deliveries = nil
			changed = true
		}
		_ = k
	}
	dirty := m.dirty
	m.dirty = false
	m.mu.Unlock()
	m.wake()
	if changed || dirty {
		m.saveAsync()
	}
}

func (m *Manager) resolvedDelivered(e *entry) bool {
	for name, d := range e.Deliveries {
		if _, ok := m.notifiers[name]; ok && (d.Firing || d.Wanted) && !d.Resolved {
			return false
		}
	}
	return true
}

func (m *Manager) entry(r *rule, tenant string) *entry {
	k := entryKey(r.cfg.Name, tenant)
	e := m.entries[k]
	if e == nil {
		e = &entry{Rule: r.cfg.Name, Tenant: tenant, Probe: r.cfg.Probe, State: StateInactive}
		m.entries[k] = e
	}
	return e
}

// step drives the state machine with one verdict; it reports whether the
// state changed.
func (m *Manager) step(r *rule, e *entry, v verdict, now time.Time) bool {
	e.Value = v.value
	e.LastBad = v.bad
	switch e.State {
	case StateInactive, StateResolved, "":
		if !v.bad {
			return false
		}
		e.State = StatePending
		e.ActiveAt = now
		e.FiredAt, e.ResolvedAt = time.Time{}, time.Time{}
		e.Good = 0
		e.Deliveries = nil
		if r.cfg.For.D() <= 0 {
			m.fire(e, now)
		}
		return true
	case StatePending:
		if !v.bad {
			e.State = StateInactive
			return true
		}
		if now.Sub(e.ActiveAt) >= r.cfg.For.D() {
			m.fire(e, now)
			return true
		}
	case StateFiring:
		if !v.ok {
			e.Good = 0
			return false
		}
		e.Good++
		if e.Good >= r.cfg.Successes {
			e.State = StateResolved
			e.ResolvedAt = now
			m.logger.Info("alert resolved", "rule", e.Rule, "tenant", e.Tenant, "probe", e.Probe)
			return true
		}
	}
	return false
}

func (m *Manager) fire(e *entry, now time.Time) {
	e.State = StateFiring
	e.FiredAt = now
	e.Good = 0
	m.logger.Warn("alert firing", "rule", e.Rule, "tenant", e.Tenant, "probe", e.Probe, "class", e.Class, "step", e.Step)
}

// labels of an alert: the rule's own plus alertname, rule, tenant, probe,
// severity.
func (m *Manager) labels(e *entry) map[string]string {
	r := m.rules[e.Rule]
	l := map[string]string{}
	if r != nil {
		maps.Copy(l, r.cfg.Labels)
		l["severity"] = r.cfg.Severity
	}
	l["alertname"] = e.Rule
	l["rule"] = e.Rule
	l["probe"] = e.Probe
	if e.Tenant != "" {
		l["tenant"] = e.Tenant
	}
	return l
}

// muted reports whether a silence or maintenance window covers the labels.
func (m *Manager) muted(labels map[string]string, now time.Time) bool {
	for _, s := range m.silences {
		if s.active(now) && matches(s.Matchers, labels) {
			return true
		}
	}
	for _, w := range m.windows {
		if matches(w.cfg.Matchers, labels) && windowActive(w.sched, w.cfg.Duration.D(), now) {
			return true
		}
	}
	return false
}

// windowActive: a window opened by the schedule at t covers [t, t+d).
func windowActive(s cron.Schedule, d time.Duration, now time.Time) bool {
	start := s.Next(now.Add(-d - time.Nanosecond))
	return !start.After(now)
}

// routed reports whether the notifier should get the alert.
func (m *Manager) routed(notifier string, labels map[string]string) bool {
	if len(m.routes) == 0 {
		return true
	}
	for _, r := range m.routes {
		if !matches(r.Match, labels) {
			continue
		}
		for _, n := range r.Notifiers {
			if n == notifier {
				return true
			}
		}
	}
	return false
}

func (m *Manager) notification(e *entry) Notification {
	r := m.rules[e.Rule]
	n := Notification{
		ID:   shortHash(e.Rule + "\x00" + e.Tenant + "\x00" + e.ActiveAt.UTC().Format(time.RFC3339Nano)),
		Rule: e.Rule, Tenant: e.Tenant, Probe: e.Probe, State: e.State,
		Since: e.ActiveAt, FiredAt: e.FiredAt, ResolvedAt: e.ResolvedAt,
		Labels: m.labels(e), Annotations: map[string]string{},
		Value: e.Value, Class: e.Class, Step: e.Step, Error: e.Error,
	}
	if r != nil {
		n.Severity = r.cfg.Severity
		maps.Copy(n.Annotations, r.cfg.Annotations)
	}
	if m.statusURL != "" {
		u := m.statusURL + "/"
		if e.Tenant != "" {
			u += "?tenant=" + url.QueryEscape(e.Tenant)
		}
		n.StatusURL = u
	}
	if n.Annotations["summary"] == "" {
		n.Annotations["summary"] = summary(r, e)
	}
	return n
}

func summary(r *rule, e *entry) string {
	who := "the deployment"
	if e.Tenant != "" {
		who = "tenant " + e.Tenant
	}
	var what string
	kind := ""
	if r != nil {
		kind = r.kind
	}
	switch kind {
	case "failures":
		what = fmt.Sprintf("probe %s failed %d times in a row", e.Probe, r.cfg.Failures)
	case "success_ratio":
		what = fmt.Sprintf("probe %s success ratio %.1f%% is below %.1f%%", e.Probe, e.Value*100, r.cfg.SuccessRatio.Below*100)
	case "threshold":
		what = fmt.Sprintf("probe %s %s %s is %.3g", e.Probe, r.cfg.Threshold.Signal, r.cfg.Threshold.Aggregate, e.Value)
	case "anomaly":
		what = fmt.Sprintf("probe %s %s is anomalous (%.3g)", e.Probe, r.cfg.Anomaly.Signal, e.Value)
	case "stale":
		what = fmt.Sprintf("probe %s produced no result for %s", e.Probe, time.Duration(e.Value*float64(time.Second)).Round(time.Second))
	default:
		what = "probe " + e.Probe
	}
	s := fmt.Sprintf("%s: %s", who, what)
	if e.Step != "" && (kind == "failures" || kind == "success_ratio") {
		s += fmt.Sprintf(" (step %s, %s)", e.Step, e.Class)
	}
	return s
}

// Alerts lists the pending, firing and recently resolved alerts.
func (m *Manager) Alerts() []AlertInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []AlertInfo
	for _, e := range m.entries {
		if e.State == StateInactive || e.State == "" {
			continue
		}
		n := m.notification(e)
		since := e.ActiveAt
		if e.State == StateResolved {
			since = e.ResolvedAt
		}
		out = append(out, AlertInfo{
			Rule: e.Rule, Tenant: e.Tenant, Probe: e.Probe, State: e.State, Severity: n.Severity,
			Since: since, Labels: n.Labels, Annotations: n.Annotations, Value: e.Value,
			Muted: m.muted(n.Labels, now),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Tenant < out[j].Tenant
	})
	return out
}

// Silences lists silences that are in force or scheduled.
func (m *Manager) Silences() []Silence {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []Silence
	for _, s := range m.silences {
		if now.Before(s.EndsAt) {
			s.Matchers = maps.Clone(s.Matchers)
			out = append(out, s)
		}
	}
	return out
}

// AddSilence validates and stores a silence (persisted with the state).
func (m *Manager) AddSilence(s Silence) (Silence, error) {
	if len(s.Matchers) == 0 {
		return Silence{}, errors.New("a silence needs at least one matcher")
	}
	m.mu.Lock()
	now := m.now()
	if s.StartsAt.IsZero() {
		s.StartsAt = now
	}
	if !s.EndsAt.After(s.StartsAt) || !s.EndsAt.After(now) {
		m.mu.Unlock()
		return Silence{}, errors.New("ends_at must be in the future and after starts_at")
	}
	s.ID = randomID()
	s.FromConfig = false
	s.Matchers = maps.Clone(s.Matchers)
	m.silences = append(m.silences, s)
	m.mu.Unlock()
	m.saveAsync()
	return s, nil
}

// ErrUnknownSilence is returned for a silence id that does not exist.
var ErrUnknownSilence = errors.New("unknown silence")

// DeleteSilence expires an API silence.
func (m *Manager) DeleteSilence(id string) error {
	m.mu.Lock()
	found := false
	for i, s := range m.silences {
		if s.ID == id {
			if s.FromConfig {
				m.mu.Unlock()
				return fmt.Errorf("silence %s comes from the configuration; remove it there", id)
			}
			m.silences = append(m.silences[:i], m.silences[i+1:]...)
			found = true
			break
		}
	}
	m.mu.Unlock()
	if !found {
		return ErrUnknownSilence
	}
	m.saveAsync()
	m.wake()
	return nil
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

// truncate cuts s to at most n bytes, never inside a UTF-8 character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
