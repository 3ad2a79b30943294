package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/probes"
)

func mustSchedule(t *testing.T, spec string) cron.Schedule {
	t.Helper()
	s, err := cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor).Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestScheduleInterval: the interval the staleness alert compares with is
// the longest gap between two starts, not the next one: a weekday schedule
// has a 72-hour weekend gap, wherever in the week it is computed.
func TestScheduleInterval(t *testing.T) {
	// A Wednesday noon and a Saturday noon, UTC.
	wed, sat := time.Date(2026, 12, 9, 12, 0, 0, 0, time.UTC), time.Date(2026, 12, 12, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		spec string
		want time.Duration
	}{
		{"@every 30s", 30 * time.Second},
		{"@every 5m", 5 * time.Minute},
		{"@hourly", time.Hour},
		{"*/15 * * * *", 15 * time.Minute},
		{"0 */6 * * *", 6 * time.Hour},
		{"0 9 * * 1-5", 72 * time.Hour},
		{"0 9-17 * * *", 16 * time.Hour},
		{"30 * * * * *", time.Minute},
		{"@monthly", 31 * 24 * time.Hour}, // January to February, from December
	} {
		for _, from := range []time.Time{wed, sat} {
			if got := ScheduleInterval(mustSchedule(t, c.spec), from); got != c.want {
				t.Errorf("%s from %s: %v, want %v", c.spec, from.Weekday(), got, c.want)
			}
		}
	}
}

// TestIntervalGauge: every scheduled probe exports its interval; disabled
// and unscheduled ones (run on demand only) do not, and a reload drops the
// interval of a probe that is gone.
func TestIntervalGauge(t *testing.T) {
	m := New()
	m.SetConfigured([]*probes.Job{
		{Name: "login", Type: "login", Schedule: mustSchedule(t, "@every 5m"), Subjects: []string{"t1", "t2"}},
		{Name: "synapse", Type: "synapse_metrics", Schedule: mustSchedule(t, "@hourly"), Subjects: []string{""}},
		{Name: "paused", Type: "login", Schedule: mustSchedule(t, "@every 1m"), Subjects: []string{"t1"}, Disabled: true},
		{Name: "ondemand", Type: "login", Subjects: []string{"t1"}},
	})
	want := `
# HELP mxprobe_probe_interval_seconds Longest time between two scheduled starts of each probe (absent for probes that run on demand only).
# TYPE mxprobe_probe_interval_seconds gauge
mxprobe_probe_interval_seconds{probe="login"} 300
mxprobe_probe_interval_seconds{probe="synapse"} 3600
`
	if err := testutil.GatherAndCompare(m, strings.NewReader(want), "mxprobe_probe_interval_seconds"); err != nil {
		t.Fatal(err)
	}
	m.SetConfigured([]*probes.Job{
		{Name: "login", Type: "login", Schedule: mustSchedule(t, "@every 2m"), Subjects: []string{"t1"}},
	})
	want = `
# HELP mxprobe_probe_interval_seconds Longest time between two scheduled starts of each probe (absent for probes that run on demand only).
# TYPE mxprobe_probe_interval_seconds gauge
mxprobe_probe_interval_seconds{probe="login"} 120
`
	if err := testutil.GatherAndCompare(m, strings.NewReader(want), "mxprobe_probe_interval_seconds"); err != nil {
		t.Fatal(err)
	}
}
