package alerts

import (
	"fmt"
	"maps"
	"net/url"
	"time"
)

// What a notification says and which notifiers it goes to.

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
	n.RefreshInterval = m.intervals[e.Probe]
	if m.cfg != nil {
		n.RefreshInterval = max(n.RefreshInterval, evaluationInterval(m.cfg))
	}
	if m.statusURL != "" {
		u := m.statusURL + "/"
		if e.Tenant != "" {
			u += "?tenant=" + url.QueryEscape(e.Tenant)
		}
		n.StatusURL = u
	}
	if n.Annotations[RunbookAnnotation] == "" {
		// runbook_url: "" in the rule turns the default link off.
		delete(n.Annotations, RunbookAnnotation)
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
