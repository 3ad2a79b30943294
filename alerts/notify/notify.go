// Package notify holds the notifiers of the alert engine: Slack (Web API or
// incoming webhook, with slack-go), a Matrix room (mautrix), Alertmanager
// (/api/v2/alerts), a generic JSON webhook with an optional HMAC-SHA256
// signature, and the console (the log). Build turns the configuration into
// notifiers; secrets are resolved here and never appear in errors.
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
)

// Options are shared by the notifiers.
type Options struct {
	// HTTP is the client for outgoing requests (deadlines come from the
	// delivery context); a default one if nil.
	HTTP   *http.Client
	Logger *slog.Logger
	// UserAgent of outgoing requests.
	UserAgent string
}

// Build makes the configured notifiers.
func Build(cfg *config.Config, opts Options) ([]alerts.Notifier, error) {
	if opts.HTTP == nil {
		opts.HTTP = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var out []alerts.Notifier
	var errs []error
	types := Types()
	for i := range cfg.Alerting.Notifiers {
		nc := &cfg.Alerting.Notifiers[i]
		newNotifier, ok := types[nc.Type]
		if !ok {
			errs = append(errs, fmt.Errorf("notifier %q: unknown notifier type %q", nc.Name, nc.Type))
			continue
		}
		n, err := newNotifier(nc, opts)
		if err != nil {
			errs = append(errs, fmt.Errorf("notifier %q: %w", nc.Name, err))
			continue
		}
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

// Constructor builds one notifier of its type from the notifier's
// configuration.
type Constructor func(nc *config.NotifierConfig, opts Options) (alerts.Notifier, error)

// Types is the notifier registry: a notifier type is its file in this
// package plus one line here (its settings live in config's NotifierConfig).
func Types() map[string]Constructor {
	return map[string]Constructor{
		config.NotifierConsole: func(nc *config.NotifierConfig, opts Options) (alerts.Notifier, error) {
			return &Console{name: nc.Name, logger: opts.Logger}, nil
		},
		config.NotifierSlack: func(nc *config.NotifierConfig, opts Options) (alerts.Notifier, error) {
			return NewSlack(nc.Name, nc.Slack, opts)
		},
		config.NotifierMatrix: func(nc *config.NotifierConfig, opts Options) (alerts.Notifier, error) {
			return NewMatrix(nc.Name, nc.Matrix, opts)
		},
		config.NotifierAlertmanager: func(nc *config.NotifierConfig, opts Options) (alerts.Notifier, error) {
			return &Alertmanager{name: nc.Name, urls: nc.Alertmanager.URLs, resend: nc.Alertmanager.ResendInterval.D(), http: opts.HTTP, ua: opts.UserAgent}, nil
		},
		config.NotifierWebhook: func(nc *config.NotifierConfig, opts Options) (alerts.Notifier, error) {
			return NewWebhook(nc.Name, nc.Webhook, opts)
		},
	}
}

// redact removes secrets (URLs, tokens) from an error's text: transport
// errors quote the request URL.
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "<secret>")
		}
	}
	return errors.New(msg)
}

// title is the one-line headline of a notification.
func title(n alerts.Notification) string {
	mark := "FIRING"
	if n.State == alerts.StateResolved {
		mark = "RESOLVED"
	}
	who := ""
	if n.Tenant != "" {
		who = " · tenant " + n.Tenant
	}
	return fmt.Sprintf("[%s] %s%s (%s)", mark, n.Rule, who, n.Severity)
}

// details are the fields every human-readable notifier shows.
func details(n alerts.Notification) [][2]string {
	var d [][2]string
	if n.Tenant != "" {
		d = append(d, [2]string{"Tenant", n.Tenant})
	}
	d = append(d, [2]string{"Probe", n.Probe})
	if n.Step != "" {
		d = append(d, [2]string{"Failing step", n.Step})
	}
	if n.Class != "" {
		d = append(d, [2]string{"Failure class", n.Class})
	}
	d = append(d, [2]string{"Since", n.Since.UTC().Format(time.RFC3339)})
	if n.State == alerts.StateResolved {
		d = append(d, [2]string{"Resolved", fmt.Sprintf("%s (after %s)", n.ResolvedAt.UTC().Format(time.RFC3339), n.ResolvedAt.Sub(n.Since).Round(time.Second))})
	}
	d = append(d, [2]string{"Severity", n.Severity})
	return d
}

// Console writes notifications to the log.
type Console struct {
	name   string
	logger *slog.Logger
}

// NewConsole returns a console notifier.
func NewConsole(name string, logger *slog.Logger) *Console {
	return &Console{name: name, logger: logger}
}

// Name implements alerts.Notifier.
func (c *Console) Name() string { return c.name }

// Notify implements alerts.Notifier.
func (c *Console) Notify(_ context.Context, n alerts.Notification) (string, error) {
	attrs := []any{"notifier", c.name, "rule", n.Rule, "tenant", n.Tenant, "probe", n.Probe, "severity", n.Severity,
		"since", n.Since.UTC().Format(time.RFC3339), "summary", n.Annotations["summary"]}
	if n.Step != "" {
		attrs = append(attrs, "failed_step", n.Step, "class", n.Class)
	}
	if n.StatusURL != "" {
		attrs = append(attrs, "status", n.StatusURL)
	}
	if u := n.Annotations[alerts.RunbookAnnotation]; u != "" {
		attrs = append(attrs, "runbook", u)
	}
	if n.State == alerts.StateResolved {
		c.logger.Info("ALERT RESOLVED", attrs...)
	} else {
		c.logger.Warn("ALERT FIRING", attrs...)
	}
	return "", nil
}
