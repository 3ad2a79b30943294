package config

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

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

// UnmarshalYAML records lines for validation messages.
func (w *MaintenanceWindow) UnmarshalYAML(n *yaml.Node) error {
	type plain MaintenanceWindow
	if err := n.Decode((*plain)(w)); err != nil {
		return err
	}
	w.line = n.Line
	return nil
}

// validateSilences checks each silence's matchers and times.
func validateSilences(c *Config) Errors {
	var errs Errors
	a := &c.Alerting
	add := adder(&errs)
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
	return errs
}

// validateMaintenanceWindows checks each window's cron schedule and duration.
func validateMaintenanceWindows(c *Config) Errors {
	var errs Errors
	a := &c.Alerting
	at, add := alertingAt(c.File), adder(&errs)
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
