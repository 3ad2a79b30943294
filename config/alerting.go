package config

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	promcfg "github.com/prometheus/common/config"
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

// applyAlertingDefaults fills the defaults of the alerting section: its own
// intervals, then each rule's and each notifier's.
func applyAlertingDefaults(c *Config) {
	a := &c.Alerting
	if a.EvaluationInterval == 0 {
		a.EvaluationInterval = Duration(15e9)
	}
	if a.ResolvedRetention == 0 {
		a.ResolvedRetention = Duration(3600e9)
	}
	for i := range a.Rules {
		applyAlertRuleDefaults(&a.Rules[i])
	}
	for i := range a.Notifiers {
		applyNotifierDefaults(&a.Notifiers[i], c.Global.HomeserverURL)
	}
}

// validateAlerting checks the alerting section: rules, silences,
// maintenance windows, notifiers, then routes (messages in that order).
func validateAlerting(c *Config) Errors {
	var errs Errors
	add := adder(&errs)
	if c.Alerting.EvaluationInterval < 0 {
		add(c.File+": alerting.evaluation_interval", "must be positive")
	}
	errs = append(errs, validateAlertRules(c)...)
	errs = append(errs, validateSilences(c)...)
	errs = append(errs, validateMaintenanceWindows(c)...)
	errs = append(errs, validateNotifiers(c)...)
	errs = append(errs, validateRoutes(c)...)
	return errs
}

// alertingAt names an alerting entry for messages: file:line when the line
// is known.
func alertingAt(file string) func(line int, what string) string {
	return func(line int, what string) string {
		if line > 0 {
			return fmt.Sprintf("%s:%d: %s", file, line, what)
		}
		return fmt.Sprintf("%s: %s", file, what)
	}
}

// adder returns a function appending "w: message" to errs.
func adder(errs *Errors) func(w, format string, args ...any) {
	return func(w, format string, args ...any) { *errs = append(*errs, w+": "+fmt.Sprintf(format, args...)) }
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
