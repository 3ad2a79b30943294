package config

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

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

// UnmarshalYAML records lines for validation messages.
func (r *AlertRule) UnmarshalYAML(n *yaml.Node) error {
	type plain AlertRule
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

// applyAlertRuleDefaults fills a rule's defaults and its condition's.
func applyAlertRuleDefaults(r *AlertRule) {
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

var (
	nameRe      = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_:.-]*$`)
	labelNameRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	quantileRe  = regexp.MustCompile(`^p(\d{1,2}(\.\d+)?)$`)
)

// reservedLabels are set by mxprobe on every alert.
var reservedLabels = map[string]bool{"alertname": true, "rule": true, "tenant": true, "probe": true, "severity": true}

// validateAlertRules checks each rule: name, probe, tenants, exactly one
// condition and its fields, labels.
func validateAlertRules(c *Config) Errors {
	var errs Errors
	a := &c.Alerting
	at, add := alertingAt(c.File), adder(&errs)

	tenants := map[string]bool{}
	for _, t := range c.Tenants {
		tenants[t.ID] = true
	}
	probes := map[string]bool{}
	for _, p := range c.Probes {
		probes[p.Name] = true
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
		if u, set := r.Annotations["runbook_url"]; set && u != "" {
			if err := checkRunbookURL(u); err != "" {
				add(w, "annotations.runbook_url: %s", err)
			}
		}
	}
	return errs
}

// checkRunbookURL accepts an absolute http(s) URL: notifiers turn it into a
// link (Slack, Matrix HTML), where any other scheme is at best dead and at
// worst javascript:.
func checkRunbookURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("%q is not a URL: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Sprintf("%q is not an absolute http(s) URL (an empty value turns the default runbook link off)", s)
	}
	return ""
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
