package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// AlertingConfig configures alert rules, silences, maintenance windows,
// notifiers and the routes between them.
type AlertingConfig struct {
	// StateFile keeps alert states and the notification log across restarts
	// (default <global.data_dir>/alerts.json; no persistence without either).
	StateFile string `yaml:"state_file" json:"state_file"`
	// EvaluationInterval is how often staleness, `for:` durations,
	// silences and maintenance windows are re-checked between results.
	EvaluationInterval Duration `yaml:"evaluation_interval" json:"evaluation_interval"`
	// ResolvedRetention is how long resolved alerts stay visible (API, page).
	ResolvedRetention Duration `yaml:"resolved_retention" json:"resolved_retention"`

	Rules              []AlertRule         `yaml:"rules" json:"rules"`
	Silences           []SilenceConfig     `yaml:"silences" json:"silences"`
	MaintenanceWindows []MaintenanceWindow `yaml:"maintenance_windows" json:"maintenance_windows"`
	Notifiers          []NotifierConfig    `yaml:"notifiers" json:"notifiers"`
	// Routes send an alert to the notifiers of every route whose match
	// labels all equal the alert's; without routes every notifier gets
	// every alert.
	Routes []Route `yaml:"routes" json:"routes"`
}

// AlertRule is one rule over the results of one probe, evaluated per tenant.
// Exactly one condition (failures, success_ratio, threshold, anomaly, stale)
// is set.
type AlertRule struct {
	Name  string `yaml:"name" json:"name"`
	Probe string `yaml:"probe" json:"probe"`
	// Tenants selects tenants by id; empty means all.
	Tenants []string `yaml:"tenants" json:"tenants,omitempty"`

	// Failures fires after this many consecutive failed runs.
	Failures     int               `yaml:"failures" json:"failures,omitempty"`
	SuccessRatio *SuccessRatioCond `yaml:"success_ratio" json:"success_ratio,omitempty"`
	Threshold    *ThresholdCond    `yaml:"threshold" json:"threshold,omitempty"`
	Anomaly      *AnomalyCond      `yaml:"anomaly" json:"anomaly,omitempty"`
	Stale        *StaleCond        `yaml:"stale" json:"stale,omitempty"`
	For          Duration          `yaml:"for" json:"for"`
	Successes    int               `yaml:"successes" json:"successes"`
	Severity     string            `yaml:"severity" json:"severity"`
	Labels       map[string]string `yaml:"labels" json:"labels,omitempty"`
	Annotations  map[string]string `yaml:"annotations" json:"annotations,omitempty"`
	line         int
}

// SuccessRatioCond fires when the share of successful runs over Window drops
// below Below (0..1), once MinSamples runs are in the window.
type SuccessRatioCond struct {
	Below      float64  `yaml:"below" json:"below"`
	Window     Duration `yaml:"window" json:"window"`
	MinSamples int      `yaml:"min_samples" json:"min_samples"`
}

// ThresholdCond fires when an aggregate of a numeric signal over Window is
// above Above or below Below. Signal is "success" (1/0), "duration" (run
// seconds), "step:<name>" (a step's seconds) or a Result signal name
// ("message_delivery_seconds", "http_5xx_ratio:RoomSendEventRestServlet").
// Aggregate is last (default), mean, max, min, or pNN (p95, p99).
type ThresholdCond struct {
	Signal     string   `yaml:"signal" json:"signal"`
	Aggregate  string   `yaml:"aggregate" json:"aggregate"`
	Window     Duration `yaml:"window" json:"window"`
	Above      *float64 `yaml:"above" json:"above,omitempty"`
	Below      *float64 `yaml:"below" json:"below,omitempty"`
	MinSamples int      `yaml:"min_samples" json:"min_samples"`
}

// AnomalyCond fires when a signal leaves its own history: value above the
// EWMA mean by more than Deviations standard deviations (and by at least
// MinDelta), after MinSamples observations.
type AnomalyCond struct {
	Signal     string  `yaml:"signal" json:"signal"`
	Alpha      float64 `yaml:"alpha" json:"alpha"`
	Deviations float64 `yaml:"deviations" json:"deviations"`
	MinSamples int     `yaml:"min_samples" json:"min_samples"`
	MinDelta   float64 `yaml:"min_delta" json:"min_delta"`
}

// StaleCond fires when a probe has produced no result for a tenant for
// Intervals of its schedule (the prober itself is stuck).
type StaleCond struct {
	Intervals float64 `yaml:"intervals" json:"intervals"`
}

// SilenceConfig mutes the alerts whose labels match all Matchers until EndsAt.
type SilenceConfig struct {
	Matchers map[string]string `yaml:"matchers" json:"matchers"`
	StartsAt string            `yaml:"starts_at" json:"starts_at,omitempty"`
	EndsAt   string            `yaml:"ends_at" json:"ends_at"`
	Comment  string            `yaml:"comment" json:"comment,omitempty"`
}

// MaintenanceWindow mutes matching alerts for Duration from every firing of
// the cron Schedule (5 fields, or 6 with seconds).
type MaintenanceWindow struct {
	Name     string            `yaml:"name" json:"name"`
	Schedule string            `yaml:"schedule" json:"schedule"`
	Duration Duration          `yaml:"duration" json:"duration"`
	Matchers map[string]string `yaml:"matchers" json:"matchers,omitempty"`
	line     int
}

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
func (r *AlertRule) UnmarshalYAML(n *yaml.Node) error {
	type plain AlertRule
	if err := n.Decode((*plain)(r)); err != nil {
		return err
	}
	r.line = n.Line
	return nil
}

// UnmarshalYAML records lines for validation messages.
func (w *MaintenanceWindow) UnmarshalYAML(n *yaml.Node) error {
	type plain MaintenanceWindow
	if err := n.Decode((*plain)(w)); err != nil {
		return err
	}
	w.line = n.Line
	return nil
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

// Condition names the rule's condition kind.
func (r *AlertRule) Condition() string {
	c := r.conditions()
	if len(c) == 1 {
		return c[0]
	}
	return ""
}

func (r *AlertRule) conditions() []string {
	var c []string
	if r.Failures > 0 {
		c = append(c, "failures")
	}
	if r.SuccessRatio != nil {
		c = append(c, "success_ratio")
	}
	if r.Threshold != nil {
		c = append(c, "threshold")
	}
	if r.Anomaly != nil {
		c = append(c, "anomaly")
	}
	if r.Stale != nil {
		c = append(c, "stale")
	}
	return c
}

// Line is the rule's line in the config file (0 when unknown).
func (r *AlertRule) Line() int { return r.line }

// AlertStatePath is where alert state is persisted ("" for none).
func (c *Config) AlertStatePath() string {
	if c.Alerting.StateFile != "" {
		return c.Alerting.StateFile
	}
	if c.Global.DataDir != "" {
		return filepath.Join(c.Global.DataDir, "alerts.json")
	}
	return ""
}

func applyAlertingDefaults(c *Config) {
	a := &c.Alerting
	if a.EvaluationInterval == 0 {
		a.EvaluationInterval = Duration(15e9)
	}
	if a.ResolvedRetention == 0 {
		a.ResolvedRetention = Duration(3600e9)
	}
	for i := range a.Rules {
		r := &a.Rules[i]
		if r.Successes == 0 {
			r.Successes = 1
		}
		if r.Severity == "" {
			r.Severity = "warning"
		}
		if s := r.SuccessRatio; s != nil {
			if s.Window == 0 {
				s.Window = Duration(3600e9)
			}
			if s.MinSamples == 0 {
				s.MinSamples = 5
			}
		}
		if t := r.Threshold; t != nil {
			if t.Aggregate == "" {
				t.Aggregate = "last"
			}
			if t.MinSamples == 0 {
				t.MinSamples = 1
			}
		}
		if an := r.Anomaly; an != nil {
			if an.Alpha == 0 {
				an.Alpha = 0.1
			}
			if an.Deviations == 0 {
				an.Deviations = 4
			}
			if an.MinSamples == 0 {
				an.MinSamples = 30
			}
		}
	}
	for i := range a.Notifiers {
		n := &a.Notifiers[i]
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
			m.HomeserverURL = c.Global.HomeserverURL
		}
		if w := n.Webhook; w != nil && w.SignatureHeader == "" {
			w.SignatureHeader = "X-Mxprobe-Signature"
		}
	}
}

var (
	nameRe      = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_:.-]*$`)
	labelNameRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	quantileRe  = regexp.MustCompile(`^p(\d{1,2}(\.\d+)?)$`)
)

// reservedLabels are set by mxprobe on every alert.
var reservedLabels = map[string]bool{"alertname": true, "rule": true, "tenant": true, "probe": true, "severity": true}

func validateAlerting(c *Config) Errors {
	var errs Errors
	a := &c.Alerting
	at := func(line int, what string) string {
		if line > 0 {
			return fmt.Sprintf("%s:%d: %s", c.File, line, what)
		}
		return fmt.Sprintf("%s: %s", c.File, what)
	}
	add := func(w, format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }

	tenants := map[string]bool{}
	for _, t := range c.Tenants {
		tenants[t.ID] = true
	}
	probes := map[string]bool{}
	for _, p := range c.Probes {
		probes[p.Name] = true
	}
	if a.EvaluationInterval < 0 {
		add(c.File+": alerting.evaluation_interval", "must be positive")
	}
	names := map[string]bool{}
	for i := range a.Rules {
		r := &a.Rules[i]
		w := at(r.line, fmt.Sprintf("alerting.rules[%d] %q", i, r.Name))
		if r.Name == "" {
			add(w, "name: missing")
		} else if !nameRe.MatchString(r.Name) {
			add(w, "name: use letters, digits, _ : . - (it becomes the alertname label)")
		}
		if names[r.Name] {
			add(w, "name: duplicate")
		}
		names[r.Name] = true
		if r.Probe == "" {
			add(w, "probe: missing (the name of a configured probe)")
		} else if !probes[r.Probe] {
			add(w, "probe: unknown probe %q", r.Probe)
		}
		for _, id := range r.Tenants {
			if !tenants[id] {
				add(w, "tenants: unknown tenant %q", id)
			}
		}
		switch conds := r.conditions(); len(conds) {
		case 0:
			add(w, "no condition: set one of failures, success_ratio, threshold, anomaly, stale")
		case 1:
		default:
			add(w, "one condition per rule, found %s", strings.Join(conds, ", "))
		}
		if r.Failures < 0 {
			add(w, "failures: must be positive")
		}
		if r.Successes < 1 {
			add(w, "successes: must be at least 1")
		}
		if r.For < 0 {
			add(w, "for: must not be negative")
		}
		if s := r.SuccessRatio; s != nil {
			if s.Below <= 0 || s.Below > 1 {
				add(w, "success_ratio.below: must be a fraction in (0, 1], such as 0.99")
			}
			if s.Window <= 0 {
				add(w, "success_ratio.window: must be positive")
			}
		}
		if t := r.Threshold; t != nil {
			if err := checkSignal(t.Signal); err != "" {
				add(w, "threshold.signal: %s", err)
			}
			if t.Above == nil && t.Below == nil {
				add(w, "threshold: set above or below")
			}
			if err := checkAggregate(t.Aggregate); err != "" {
				add(w, "threshold.aggregate: %s", err)
			}
			if t.Aggregate != "last" && t.Window <= 0 {
				add(w, "threshold.window: needed with aggregate %q", t.Aggregate)
			}
		}
		if an := r.Anomaly; an != nil {
			if err := checkSignal(an.Signal); err != "" {
				add(w, "anomaly.signal: %s", err)
			}
			if an.Alpha <= 0 || an.Alpha >= 1 {
				add(w, "anomaly.alpha: must be in (0, 1)")
			}
			if an.Deviations <= 0 {
				add(w, "anomaly.deviations: must be positive")
			}
			if an.MinSamples < 2 {
				add(w, "anomaly.min_samples: must be at least 2")
			}
		}
		if s := r.Stale; s != nil && s.Intervals <= 0 {
			add(w, "stale.intervals: must be positive")
		}
		for k := range r.Labels {
			if !labelNameRe.MatchString(k) {
				add(w, "labels: %q is not a valid label name", k)
			} else if reservedLabels[k] {
				add(w, "labels: %q is set by mxprobe", k)
			}
		}
	}
	for i, s := range a.Silences {
		w := fmt.Sprintf("%s: alerting.silences[%d]", c.File, i)
		if len(s.Matchers) == 0 {
			add(w, "matchers: at least one label is needed")
		}
		if s.EndsAt == "" {
			add(w, "ends_at: missing (RFC 3339, such as 2030-01-02T15:04:05Z)")
		} else if _, err := parseTime(s.EndsAt); err != nil {
			add(w, "ends_at: %v", err)
		}
		if s.StartsAt != "" {
			if _, err := parseTime(s.StartsAt); err != nil {
				add(w, "starts_at: %v", err)
			}
		}
	}
	for i := range a.MaintenanceWindows {
		mw := &a.MaintenanceWindows[i]
		w := at(mw.line, fmt.Sprintf("alerting.maintenance_windows[%d] %q", i, mw.Name))
		if _, err := cronParser.Parse(mw.Schedule); err != nil {
			add(w, "schedule: invalid cron spec %q: %v", mw.Schedule, err)
		}
		if mw.Duration <= 0 {
			add(w, "duration: must be positive")
		}
	}
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
			s := n.Slack
			if s == nil {
				add(w, "slack: missing")
				break
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
		case NotifierMatrix:
			m := n.Matrix
			if m == nil {
				add(w, "matrix: missing")
				break
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
		case NotifierAlertmanager:
			am := n.Alertmanager
			if am == nil || len(am.URLs) == 0 {
				add(w, "alertmanager.urls: at least one Alertmanager URL is needed")
				break
			}
			for _, u := range am.URLs {
				if err := checkURL(u); err != nil {
					add(w, "alertmanager.urls: %v", err)
				}
			}
			if am.ResendInterval <= 0 {
				add(w, "alertmanager.resend_interval: must be positive")
			}
		case NotifierWebhook:
			h := n.Webhook
			if h == nil || (h.URL == "" && h.URLFile == "") {
				add(w, "webhook.url: missing (or url_file)")
				break
			}
			if h.URL != "" {
				// The URL is a secret: say what is wrong, never echo it.
				if err := checkURL(string(h.URL)); err != nil {
					add(w, "webhook.url: %v", err)
				}
			}
			errs = append(errs, exclusive(w+": webhook", "url", h.URL, h.URLFile)...)
			errs = append(errs, exclusive(w+": webhook", "hmac_secret", h.HMACSecret, h.HMACSecretFile)...)
		case NotifierConsole:
		default:
			add(w, "type: unknown notifier type %q (known: alertmanager, console, matrix, slack, webhook)", n.Type)
		}
		if n.Timeout <= 0 {
			add(w, "timeout: must be positive")
		}
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

// ParseTime reads a silence time: RFC 3339.
func ParseTime(s string) (time.Time, error) { return parseTime(s) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("not an RFC 3339 time such as 2030-01-02T15:04:05Z")
	}
	return t, nil
}

func exclusive(w, field string, inline promcfg.Secret, file string) Errors {
	if inline != "" && file != "" {
		return Errors{fmt.Sprintf("%s.%s and %s_file are mutually exclusive", w, field, field)}
	}
	return nil
}

func keys(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func checkSignal(s string) string {
	switch {
	case s == "":
		return "missing (success, duration, step:<name>, or a result signal such as message_delivery_seconds)"
	case strings.HasPrefix(s, "step:") && len(s) == len("step:"):
		return "step: needs a step name"
	}
	return ""
}

func checkAggregate(a string) string {
	switch a {
	case "last", "mean", "max", "min":
		return ""
	}
	if quantileRe.MatchString(a) {
		return ""
	}
	return fmt.Sprintf("unknown aggregate %q (last, mean, max, min, or a quantile such as p95)", a)
}
