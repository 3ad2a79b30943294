package config

import (
	"fmt"
	"strings"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// Notifier types.
const (
	NotifierSlack        = "slack"
	NotifierMatrix       = "matrix"
	NotifierAlertmanager = "alertmanager"
	NotifierWebhook      = "webhook"
	NotifierConsole      = "console"
)

// NotifierConfig is one notifier. Exactly the block of its type is set.
type NotifierConfig struct {
	Name string `yaml:"name" json:"name"`
	Type string `yaml:"type" json:"type"`
	// Timeout of one delivery attempt (default 10s).
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// MaxBackoff caps the retry delay (default 5m); retries go on while the
	// notification is still wanted.
	MaxBackoff Duration `yaml:"max_backoff" json:"max_backoff"`

	Slack        *SlackNotifier        `yaml:"slack" json:"slack,omitempty"`
	Matrix       *MatrixNotifier       `yaml:"matrix" json:"matrix,omitempty"`
	Alertmanager *AlertmanagerNotifier `yaml:"alertmanager" json:"alertmanager,omitempty"`
	Webhook      *WebhookNotifier      `yaml:"webhook" json:"webhook,omitempty"`
	line         int
}

// SlackNotifier posts with a bot token (Web API: the same message is updated
// on resolve, with a reply in its thread) or an incoming webhook.
type SlackNotifier struct {
	Token          promcfg.Secret `yaml:"token" json:"token"`
	TokenFile      string         `yaml:"token_file" json:"token_file,omitempty"`
	Channel        string         `yaml:"channel" json:"channel,omitempty"`
	WebhookURL     promcfg.Secret `yaml:"webhook_url" json:"webhook_url"`
	WebhookURLFile string         `yaml:"webhook_url_file" json:"webhook_url_file,omitempty"`
	// APIURL overrides https://slack.com/api/ (tests, proxies).
	APIURL string `yaml:"api_url" json:"api_url,omitempty"`
}

// MatrixNotifier posts into a room with a configured account.
type MatrixNotifier struct {
	HomeserverURL   string         `yaml:"homeserver_url" json:"homeserver_url"`
	RoomID          string         `yaml:"room_id" json:"room_id"`
	User            string         `yaml:"user" json:"user"`
	Password        promcfg.Secret `yaml:"password" json:"password"`
	PasswordFile    string         `yaml:"password_file" json:"password_file,omitempty"`
	AccessToken     promcfg.Secret `yaml:"access_token" json:"access_token"`
	AccessTokenFile string         `yaml:"access_token_file" json:"access_token_file,omitempty"`
}

// AlertmanagerNotifier posts to Alertmanager's /api/v2/alerts, re-sent every
// ResendInterval while firing.
type AlertmanagerNotifier struct {
	URLs           []string `yaml:"urls" json:"urls"`
	ResendInterval Duration `yaml:"resend_interval" json:"resend_interval"`
}

// WebhookNotifier posts JSON, optionally signed with HMAC-SHA256.
type WebhookNotifier struct {
	URL            promcfg.Secret `yaml:"url" json:"url"`
	URLFile        string         `yaml:"url_file" json:"url_file,omitempty"`
	HMACSecret     promcfg.Secret `yaml:"hmac_secret" json:"hmac_secret"`
	HMACSecretFile string         `yaml:"hmac_secret_file" json:"hmac_secret_file,omitempty"`
	// SignatureHeader carries "sha256=<hex>" (default X-Mxprobe-Signature).
	SignatureHeader string `yaml:"signature_header" json:"signature_header,omitempty"`
}

// Route sends matching alerts to notifiers.
type Route struct {
	Match     map[string]string `yaml:"match" json:"match,omitempty"`
	Notifiers []string          `yaml:"notifiers" json:"notifiers"`
	line      int
}

// UnmarshalYAML records lines for validation messages.
func (nc *NotifierConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain NotifierConfig
	if err := n.Decode((*plain)(nc)); err != nil {
		return err
	}
	nc.line = n.Line
	return nil
}

// UnmarshalYAML records lines for validation messages.
func (r *Route) UnmarshalYAML(n *yaml.Node) error {
	type plain Route
	if err := n.Decode((*plain)(r)); err != nil {
		return err
	}
	r.line = n.Line
	return nil
}

// applyNotifierDefaults fills a notifier's defaults; a Matrix notifier
// without a homeserver_url uses homeserverURL (global.homeserver_url).
func applyNotifierDefaults(n *NotifierConfig, homeserverURL string) {
	if n.Name == "" {
		n.Name = n.Type
	}
	if n.Timeout == 0 {
		n.Timeout = Duration(10e9)
	}
	if n.MaxBackoff == 0 {
		n.MaxBackoff = Duration(300e9)
	}
	if am := n.Alertmanager; am != nil && am.ResendInterval == 0 {
		am.ResendInterval = Duration(60e9)
	}
	if m := n.Matrix; m != nil && m.HomeserverURL == "" {
		m.HomeserverURL = homeserverURL
	}
	if w := n.Webhook; w != nil && w.SignatureHeader == "" {
		w.SignatureHeader = "X-Mxprobe-Signature"
	}
}

// validateNotifiers checks each notifier's common fields and the block of
// its type.
func validateNotifiers(c *Config) Errors {
	var errs Errors
	a := &c.Alerting
	at, add := alertingAt(c.File), adder(&errs)
	nnames := map[string]bool{}
	for i := range a.Notifiers {
		n := &a.Notifiers[i]
		w := at(n.line, fmt.Sprintf("alerting.notifiers[%d] %q", i, n.Name))
		if nnames[n.Name] {
			add(w, "name: duplicate")
		}
		nnames[n.Name] = true
		blocks := 0
		for _, set := range []bool{n.Slack != nil, n.Matrix != nil, n.Alertmanager != nil, n.Webhook != nil} {
			if set {
				blocks++
			}
		}
		if blocks > 1 {
			add(w, "only the block of the notifier's type may be set")
		}
		switch n.Type {
		case NotifierSlack:
			errs = append(errs, validateSlackNotifier(w, n.Slack)...)
		case NotifierMatrix:
			errs = append(errs, validateMatrixNotifier(w, n.Matrix)...)
		case NotifierAlertmanager:
			errs = append(errs, validateAlertmanagerNotifier(w, n.Alertmanager)...)
		case NotifierWebhook:
			errs = append(errs, validateWebhookNotifier(w, n.Webhook)...)
		case NotifierConsole:
		default:
			add(w, "type: unknown notifier type %q (known: alertmanager, console, matrix, slack, webhook)", n.Type)
		}
		if n.Timeout <= 0 {
			add(w, "timeout: must be positive")
		}
	}
	return errs
}

// validateSlackNotifier checks the slack block of the notifier named by w.
func validateSlackNotifier(w string, s *SlackNotifier) Errors {
	var errs Errors
	add := adder(&errs)
	if s == nil {
		add(w, "slack: missing")
		return errs
	}
	hasToken := s.Token != "" || s.TokenFile != ""
	hasHook := s.WebhookURL != "" || s.WebhookURLFile != ""
	switch {
	case hasToken && hasHook:
		add(w, "slack: token and webhook_url are mutually exclusive")
	case !hasToken && !hasHook:
		add(w, "slack: set token (Web API, with channel) or webhook_url (or their _file variants)")
	case hasToken && s.Channel == "":
		add(w, "slack.channel: missing (needed with a token)")
	}
	errs = append(errs, exclusive(w+": slack", "token", s.Token, s.TokenFile)...)
	errs = append(errs, exclusive(w+": slack", "webhook_url", s.WebhookURL, s.WebhookURLFile)...)
	if s.APIURL != "" {
		if err := checkURL(s.APIURL); err != nil {
			add(w, "slack.api_url: %v", err)
		}
	}
	return errs
}

// validateMatrixNotifier checks the matrix block of the notifier named by w.
func validateMatrixNotifier(w string, m *MatrixNotifier) Errors {
	var errs Errors
	add := adder(&errs)
	if m == nil {
		add(w, "matrix: missing")
		return errs
	}
	if err := checkURL(m.HomeserverURL); err != nil {
		add(w, "matrix.homeserver_url: %v", err)
	}
	if !strings.HasPrefix(m.RoomID, "!") {
		add(w, "matrix.room_id: must be a room id (!...:server)")
	}
	hasTok := m.AccessToken != "" || m.AccessTokenFile != ""
	hasPw := m.Password != "" || m.PasswordFile != ""
	if hasTok == hasPw {
		add(w, "matrix: set either access_token or user with password (or their _file variants)")
	}
	if hasPw && m.User == "" {
		add(w, "matrix.user: missing (needed with a password)")
	}
	errs = append(errs, exclusive(w+": matrix", "password", m.Password, m.PasswordFile)...)
	errs = append(errs, exclusive(w+": matrix", "access_token", m.AccessToken, m.AccessTokenFile)...)
	return errs
}

// validateAlertmanagerNotifier checks the alertmanager block of the notifier
// named by w.
func validateAlertmanagerNotifier(w string, am *AlertmanagerNotifier) Errors {
	var errs Errors
	add := adder(&errs)
	if am == nil || len(am.URLs) == 0 {
		add(w, "alertmanager.urls: at least one Alertmanager URL is needed")
		return errs
	}
	for _, u := range am.URLs {
		if err := checkURL(u); err != nil {
			add(w, "alertmanager.urls: %v", err)
		}
	}
	if am.ResendInterval <= 0 {
		add(w, "alertmanager.resend_interval: must be positive")
	}
	return errs
}

// validateWebhookNotifier checks the webhook block of the notifier named by w.
func validateWebhookNotifier(w string, h *WebhookNotifier) Errors {
	var errs Errors
	add := adder(&errs)
	if h == nil || (h.URL == "" && h.URLFile == "") {
		add(w, "webhook.url: missing (or url_file)")
		return errs
	}
	if h.URL != "" {
		// The URL is a secret: say what is wrong, never echo it.
		if err := checkURL(string(h.URL)); err != nil {
			add(w, "webhook.url: %v", err)
		}
	}
	errs = append(errs, exclusive(w+": webhook", "url", h.URL, h.URLFile)...)
	errs = append(errs, exclusive(w+": webhook", "hmac_secret", h.HMACSecret, h.HMACSecretFile)...)
	return errs
}

// validateRoutes checks that every route names known notifiers.
func validateRoutes(c *Config) Errors {
	var errs Errors
	a := &c.Alerting
	at, add := alertingAt(c.File), adder(&errs)
	nnames := map[string]bool{}
	for i := range a.Notifiers {
		nnames[a.Notifiers[i].Name] = true
	}
	for i := range a.Routes {
		r := &a.Routes[i]
		w := at(r.line, fmt.Sprintf("alerting.routes[%d]", i))
		if len(r.Notifiers) == 0 {
			add(w, "notifiers: at least one notifier name is needed")
		}
		for _, n := range r.Notifiers {
			if !nnames[n] {
				add(w, "notifiers: unknown notifier %q (known: %s)", n, keys(nnames))
			}
		}
	}
	return errs
}
