package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
)

// wire_alerts plugs the alert engine into the daemon: a sink fed with every
// Result, its metrics, the web API adapter, and reloads of rules and
// notifiers. The manager is created on the first configuration load (its
// state file depends on it) and reconfigured on later reloads.
func init() {
	startHooks = append(startHooks, func(d *daemon) error {
		w := &alertsWiring{d: d}
		d.sinks = append(d.sinks, probes.SinkFunc(w.observe))
		if err := d.metrics.Registry.Register(w); err != nil {
			return err
		}
		d.web.SetAlerts(alertsAdapter{w})
		d.stops = append(d.stops, w.stop)
		d.reloaders = append(d.reloaders, func(cfg *config.Config) error { return w.reload(d, cfg) })
		return nil
	})
}

type alertsWiring struct {
	d         *daemon
	mu        sync.Mutex
	m         *alerts.Manager
	statePath string
}

func (w *alertsWiring) manager() *alerts.Manager {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m
}

func (w *alertsWiring) observe(r probes.Result) {
	if m := w.manager(); m != nil {
		m.Observe(r)
	}
}

// reload builds the notifiers of cfg and applies rules and notifiers; an
// error rejects the reload.
func (w *alertsWiring) reload(d *daemon, cfg *config.Config) error {
	if activeShard.Enabled() {
		// Sharded replicas each see part of the tenants and all of the
		// global probes: only Alertmanager can deduplicate their alerts.
		for _, n := range cfg.Alerting.Notifiers {
			if n.Type != config.NotifierAlertmanager && n.Type != config.NotifierConsole {
				return fmt.Errorf("alerting.notifiers %q: a sharded deployment (--shard.count > 1) must alert through Alertmanager (type alertmanager), which deduplicates across replicas", n.Name)
			}
		}
	}
	// Notifiers carry credentials (Matrix access token, Slack token, webhook
	// HMAC): a redirect is answered as the failure it is, never followed.
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ns, err := notify.Build(cfg, notify.Options{HTTP: httpc, Logger: d.logger, UserAgent: "mxprobe/" + version.Version})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		var filter func([]string) []string
		if len(tenantFilters) > 0 {
			filter = func(ids []string) []string {
				for _, f := range tenantFilters {
					ids = f(ids)
				}
				return ids
			}
		}
		m, err := alerts.New(alerts.Options{Config: cfg, Notifiers: ns, Logger: d.logger.With("component", "alerts"), TenantFilter: filter})
		if err != nil {
			return err
		}
		m.Start()
		w.m = m
		w.statePath = cfg.AlertStatePath()
		return nil
	}
	if p := cfg.AlertStatePath(); p != w.statePath {
		d.logger.Warn("the alert state file changed; it takes effect at the next restart", "old", w.statePath, "new", p)
	}
	return w.m.Apply(cfg, ns)
}

func (w *alertsWiring) stop() {
	if m := w.manager(); m != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Stop(ctx)
	}
}

// Describe sends nothing: the collector is unchecked because the manager
// appears only with the first configuration.
func (w *alertsWiring) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (w *alertsWiring) Collect(ch chan<- prometheus.Metric) {
	if m := w.manager(); m != nil {
		m.Collector().Collect(ch)
	}
}

// alertsAdapter presents the manager to the web API (exporters/web does not
// import alerts).
type alertsAdapter struct{ w *alertsWiring }

var errNoAlerting = errors.New("alerting is not running")

func (a alertsAdapter) Alerts() []web.AlertView {
	m := a.w.manager()
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

func (a alertsAdapter) Silences() []web.Silence {
	m := a.w.manager()
	if m == nil {
		return nil
	}
	var out []web.Silence
	for _, s := range m.Silences() {
		out = append(out, toWebSilence(s))
	}
	return out
}

func (a alertsAdapter) AddSilence(s web.Silence) (web.Silence, error) {
	m := a.w.manager()
	if m == nil {
		return web.Silence{}, errNoAlerting
	}
	got, err := m.AddSilence(alerts.Silence{Matchers: s.Matchers, StartsAt: s.StartsAt, EndsAt: s.EndsAt, Comment: s.Comment, CreatedBy: s.CreatedBy})
	if err != nil {
		return web.Silence{}, err
	}
	return toWebSilence(got), nil
}

func (a alertsAdapter) DeleteSilence(id string) error {
	m := a.w.manager()
	if m == nil {
		return errNoAlerting
	}
	return m.DeleteSilence(id)
}

func toWebSilence(s alerts.Silence) web.Silence {
	return web.Silence{ID: s.ID, Matchers: s.Matchers, StartsAt: s.StartsAt, EndsAt: s.EndsAt, Comment: s.Comment, CreatedBy: s.CreatedBy}
}
