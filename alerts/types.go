// Package alerts turns probe Results into alerts: rules evaluated per
// (rule, tenant), a state machine inactive → pending → firing → resolved
// with `for:` and recovery thresholds, silences and maintenance windows that
// mute notifications but keep state, persistence with atomic rename, and
// per-notifier delivery workers with timeouts, retries and backoff.
//
// The package imports probes (the Result type) and the configuration, never
// anything below probes, and it knows nothing about HTTP serving: cmd/mxprobe
// wires it to the web API. Notifier implementations live in alerts/notify.
package alerts

import (
	"context"
	"time"
)

// State of an alert.
type State string

// Alert states.
const (
	StateInactive State = "inactive"
	StatePending  State = "pending"
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Notification is what a notifier delivers: one alert instance, firing or
// resolved. It carries no secret.
type Notification struct {
	// ID is stable for one alert instance (rule, tenant, start).
	ID       string `json:"id"`
	Rule     string `json:"rule"`
	Tenant   string `json:"tenant,omitempty"`
	Probe    string `json:"probe"`
	Severity string `json:"severity"`
	State    State  `json:"state"`
	// Since is when the condition first held (the alert became pending).
	Since      time.Time         `json:"since"`
	FiredAt    time.Time         `json:"fired_at"`
	ResolvedAt time.Time         `json:"resolved_at,omitzero"`
	Labels     map[string]string `json:"labels"`
	// Annotations include "summary" (always) and whatever the rule adds.
	Annotations map[string]string `json:"annotations"`
	Value       float64           `json:"value"`
	// Class, Step and Error describe the last failed run, where there was one.
	Class string `json:"failure_class,omitempty"`
	Step  string `json:"failed_step,omitempty"`
	Error string `json:"error,omitempty"`
	// StatusURL links to the status page (global.external_url).
	StatusURL string `json:"status_url,omitempty"`
	// Ref is what this notifier returned for the firing notification of the
	// same instance (a Slack message, a Matrix event), empty if none.
	Ref string `json:"-"`
	// Resend is true when a firing notification is sent again (Alertmanager).
	Resend bool `json:"-"`
	// RefreshInterval is how often the alert's condition is judged again:
	// the longer of its probe's schedule interval and the evaluation
	// interval. A notifier that lets alerts expire unless re-sent
	// (Alertmanager) must keep them alive for a few of these, not only a
	// few resend intervals: a firing alert is confirmed no more often, and
	// a tenant handed to another replica is first probed there up to one
	// interval later.
	RefreshInterval time.Duration `json:"-"`
}

// Notifier delivers notifications. Notify must honour ctx (the delivery
// timeout) and return an error that names no secret. The returned ref is
// kept with the alert and handed back in Notification.Ref on resolve.
type Notifier interface {
	Name() string
	Notify(ctx context.Context, n Notification) (ref string, err error)
}

// Resender is a Notifier that wants firing alerts re-sent at an interval
// (Alertmanager expires alerts that are not refreshed).
type Resender interface {
	ResendInterval() time.Duration
}

// Silence mutes notifications of alerts whose labels equal all Matchers
// between StartsAt and EndsAt.
type Silence struct {
	ID        string            `json:"id"`
	Matchers  map[string]string `json:"matchers"`
	StartsAt  time.Time         `json:"starts_at"`
	EndsAt    time.Time         `json:"ends_at"`
	Comment   string            `json:"comment,omitempty"`
	CreatedBy string            `json:"created_by,omitempty"`
	// FromConfig silences come from the configuration and cannot be deleted
	// through the API.
	FromConfig bool `json:"from_config,omitempty"`
}

func (s Silence) active(now time.Time) bool {
	return !now.Before(s.StartsAt) && now.Before(s.EndsAt)
}

func matches(matchers, labels map[string]string) bool {
	for k, v := range matchers {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// AlertInfo is a read-only view of one alert for the API and status page.
type AlertInfo struct {
	Rule        string
	Tenant      string
	Probe       string
	State       State
	Severity    string
	Since       time.Time
	Labels      map[string]string
	Annotations map[string]string
	Value       float64
	Muted       bool
}
