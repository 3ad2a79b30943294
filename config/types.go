package config

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"
)

// Duration is a Prometheus-style duration ("30s", "5m", "1h30m", "1d") whose
// YAML errors name the line they come from.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler; a bad value is reported as a
// yaml.TypeError so the decoder keeps going and reports every problem.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return lineError(n, "expected a duration such as 30s or 5m, got %s", n.Tag)
	}
	md, err := model.ParseDuration(s)
	if err != nil {
		return lineError(n, "invalid duration %q: use a number and a unit (ms, s, m, h, d), such as 30s", s)
	}
	*d = Duration(md)
	return nil
}

// MarshalYAML renders the duration the way it is written.
func (d Duration) MarshalYAML() (any, error) { return model.Duration(d).String(), nil }

// MarshalJSON renders the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + model.Duration(d).String() + `"`), nil
}

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return model.Duration(d).String() }

// cronParser accepts standard 5-field specs, optional seconds, and
// descriptors such as @every 1m or @hourly.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is a cron spec or an @every interval, validated while decoding.
type Schedule struct {
	Spec     string
	Schedule cron.Schedule
}

// ParseSchedule validates a cron spec or @every interval.
func ParseSchedule(spec string) (Schedule, error) {
	s, err := cronParser.Parse(spec)
	if err != nil {
		return Schedule{}, err
	}
	if every, ok := s.(cron.ConstantDelaySchedule); ok && every.Delay < time.Second {
		return Schedule{}, fmt.Errorf("@every interval must be at least 1s")
	}
	return Schedule{Spec: spec, Schedule: s}, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Schedule) UnmarshalYAML(n *yaml.Node) error {
	var spec string
	if err := n.Decode(&spec); err != nil {
		return lineError(n, "expected a schedule such as \"@every 1m\" or \"*/5 * * * *\"")
	}
	parsed, err := ParseSchedule(spec)
	if err != nil {
		return lineError(n, "invalid schedule %q: %v", spec, err)
	}
	*s = parsed
	return nil
}

// MarshalYAML renders the spec.
func (s Schedule) MarshalYAML() (any, error) { return s.Spec, nil }

// MarshalJSON renders the spec.
func (s Schedule) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", s.Spec)), nil }

// Interval estimates the time between two firings, used to spread tenants.
func (s Schedule) Interval(from time.Time) time.Duration {
	if s.Schedule == nil {
		return 0
	}
	if every, ok := s.Schedule.(cron.ConstantDelaySchedule); ok {
		return every.Delay
	}
	a := s.Schedule.Next(from)
	b := s.Schedule.Next(a)
	return b.Sub(a)
}

func lineError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", n.Line) + fmt.Sprintf(format, args...)}}
}
