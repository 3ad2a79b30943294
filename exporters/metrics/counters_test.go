package metrics

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mxprobe/mxprobe/probes"
)

// TestCountersStartAtZero: the counters of known label sets exist at 0 as
// soon as the jobs are configured, before their first event; jobs that
// cannot count them get none.
func TestCountersStartAtZero(t *testing.T) {
	m := New()
	m.SetConfigured([]*probes.Job{
		{Name: "roundtrip", Type: "roundtrip", Subjects: []string{"t1", "t2"},
			Prober: counts{"rate_limited:invite", "rate_limited:send", "token_refresh", "cleanup_failure"}},
		{Name: "login", Type: "login", Subjects: []string{"t1"}, Prober: counts{"token_refresh"}},
		{Name: "synapse", Type: "synapse_metrics", Subjects: []string{""}},
	})
	want := `
# HELP mxprobe_cleanup_failures_total Probe rooms that could not be left or forgotten.
# TYPE mxprobe_cleanup_failures_total counter
mxprobe_cleanup_failures_total{probe="roundtrip"} 0
# HELP mxprobe_rate_limited_total 429 M_LIMIT_EXCEEDED answers met by probes, by the step that met them (empty: outside a named step).
# TYPE mxprobe_rate_limited_total counter
mxprobe_rate_limited_total{probe="roundtrip",step="invite",tenant="t1"} 0
mxprobe_rate_limited_total{probe="roundtrip",step="invite",tenant="t2"} 0
mxprobe_rate_limited_total{probe="roundtrip",step="send",tenant="t1"} 0
mxprobe_rate_limited_total{probe="roundtrip",step="send",tenant="t2"} 0
# HELP mxprobe_token_refresh_total Sessions renewed after expiry or M_UNKNOWN_TOKEN (by refresh token or a fresh login).
# TYPE mxprobe_token_refresh_total counter
mxprobe_token_refresh_total{probe="login",tenant="t1"} 0
mxprobe_token_refresh_total{probe="roundtrip",tenant="t1"} 0
mxprobe_token_refresh_total{probe="roundtrip",tenant="t2"} 0
`
	if err := testutil.GatherAndCompare(m, strings.NewReader(want),
		"mxprobe_cleanup_failures_total", "mxprobe_rate_limited_total", "mxprobe_token_refresh_total"); err != nil {
		t.Fatal(err)
	}
}

// counts is a prober that declares these Result.Counts keys.
type counts []string

func (counts) Run(context.Context, string) probes.Result { return probes.Result{} }
func (c counts) DeclaredCounts() []string                { return c }
