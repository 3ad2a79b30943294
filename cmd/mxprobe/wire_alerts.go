package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/probes"
)

// wire_alerts plugs the alert engine into the daemon: a sink fed with every
// Result, its metrics, the web API adapter. The manager (alert states,
// silences) is a store: the first configuration creates it, later ones are
// prepared by assemble and committed.

// buildNotifiers builds the notifiers of cfg (nothing is sent or started).
func buildNotifiers(cfg *config.Config, e *env) ([]alerts.Notifier, error) {
	if e.shard.Enabled() {
		// Sharded replicas each see part of the tenants and all of the
		// global probes: only Alertmanager can deduplicate their alerts.
		for _, n := range cfg.Alerting.Notifiers {
			if n.Type != config.NotifierAlertmanager && n.Type != config.NotifierConsole {
				return nil, fmt.Errorf("alerting.notifiers %q: a sharded deployment (--shard.count > 1) must alert through Alertmanager (type alertmanager), which deduplicates across replicas", n.Name)
			}
		}
	}
	// Notifiers carry credentials (Matrix access token, Slack token, webhook
	// HMAC): a redirect is answered as the failure it is, never followed.
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return notify.Build(cfg, notify.Options{HTTP: httpc, Logger: e.logger, UserAgent: userAgent()})
}

// commitAlerts installs rt's alerting: starts the first configuration's
// manager, or commits the plan prepared for the running one.
func (d *daemon) commitAlerts(rt *runtime) {
	if rt.newAlerts != nil {
		rt.newAlerts.Start()
		d.stores.alerts.Store(rt.newAlerts)
		return
	}
	m := d.stores.alerts.Load()
	if old := d.config(); old != nil && old.AlertStatePath() != rt.cfg.AlertStatePath() {
		d.logger.Warn("the alert state file changed; it takes effect at the next restart", "old", old.AlertStatePath(), "new", rt.cfg.AlertStatePath())
	}
	m.Commit(rt.alertsPlan)
}

// alertsView presents the alert manager store to the sinks, /metrics and
// the web API (exporters/web does not import alerts).
type alertsView struct{ st *stores }

func (a alertsView) observe(r probes.Result) {
	if m := a.st.alerts.Load(); m != nil {
		m.Observe(r)
	}
}

func (a alertsView) stop() {
	if m := a.st.alerts.Load(); m != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Stop(ctx)
	}
}

// Describe sends nothing: the collector is unchecked because the manager
// appears only with the first configuration.
func (a alertsView) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (a alertsView) Collect(ch chan<- prometheus.Metric) {
	if m := a.st.alerts.Load(); m != nil {
		m.Collector().Collect(ch)
	}
}

// errNoAlerting: the API asked for alerting before the first configuration.
const errNoAlerting = constError("alerting is not running")

// constError is an error that can be a constant.
type constError string

func (e constError) Error() string { return string(e) }

func (a alertsView) Alerts() []web.AlertView {
	m := a.st.alerts.Load()
	if m == nil {
		return nil
	}
	var out []web.AlertView
	for _, al := range m.Alerts() {
		state := string(al.State)
		if al.Muted && al.State == alerts.StateFiring {
			state = "silenced"
		}
		out = append(out, web.AlertView{Rule: al.Rule, Tenant: al.Tenant, Probe: al.Probe, State: state,
			Severity: al.Severity, Since: al.Since, Labels: al.Labels, Annotations: al.Annotations, Value: al.Value})
	}
	return out
}

func (a alertsView) Silences() []web.Silence {
	m := a.st.alerts.Load()
	if m == nil {
		return nil
	}
	var out []web.Silence
	for _, s := range m.Silences() {
		out = append(out, toWebSilence(s))
	}
	return out
}

func (a alertsView) AddSilence(s web.Silence) (web.Silence, error) {
	m := a.st.alerts.Load()
	if m == nil {
		return web.Silence{}, errNoAlerting
	}
	got, err := m.AddSilence(alerts.Silence{Matchers: s.Matchers, StartsAt: s.StartsAt, EndsAt: s.EndsAt, Comment: s.Comment, CreatedBy: s.CreatedBy})
	if err != nil {
		return web.Silence{}, err
	}
	return toWebSilence(got), nil
}

func (a alertsView) DeleteSilence(id string) error {
	m := a.st.alerts.Load()
	if m == nil {
		return errNoAlerting
	}
	return m.DeleteSilence(id)
}

func toWebSilence(s alerts.Silence) web.Silence {
	return web.Silence{ID: s.ID, Matchers: s.Matchers, StartsAt: s.StartsAt, EndsAt: s.EndsAt, Comment: s.Comment, CreatedBy: s.CreatedBy}
}

// userAgent is mxprobe's User-Agent, for serve and run alike.
func userAgent() string { return "mxprobe/" + version.Version }
