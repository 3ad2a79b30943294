package alerts

import (
	"sort"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// Rule evaluation: results and time (Tick) move alerts between states.

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
			e.Class, e.Step, e.Error = string(res.Class), res.FailedStep, probes.CutText(res.Error, 300)
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
