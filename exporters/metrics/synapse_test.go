package metrics

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mxprobe/mxprobe/probes"
)

func TestSynapseHook(t *testing.T) {
	m := New()
	h := NewSynapse(synapseType)
	m.AddHook(h)
	m.Observe(probes.Result{Probe: "synapse", Type: synapseType, Outcome: probes.OutcomeSuccess,
		Steps: []probes.Step{{Name: "scrape", OK: true}, {Name: "parse", OK: true}},
		Signals: map[string]float64{
			"http_5xx_ratio": 0.02,
			"http_5xx_ratio:RoomSendEventRestServlet":            0.1,
			"http_response_p95_seconds:RoomSendEventRestServlet": 0.25,
			"http_requests_per_second":                           40,
			"db_txn_mean_seconds":                                0.006,
			"build_info:1.157.1":                                 1,
			"page_bytes":                                         123, // not exported
		}})
	m.Observe(probes.Result{Probe: "other", Type: "login", Outcome: probes.OutcomeSuccess,
		Signals: map[string]float64{"http_5xx_ratio": 1}})
	want := `
# HELP mxprobe_synapse_build_info Synapse version from synapse_build_info; always 1.
# TYPE mxprobe_synapse_build_info gauge
mxprobe_synapse_build_info{probe="synapse",version="1.157.1"} 1
# HELP mxprobe_synapse_db_txn_mean_seconds Mean database transaction time in seconds, all processes. Derived by mxprobe from the last two scrapes (docs/synapse.md).
# TYPE mxprobe_synapse_db_txn_mean_seconds gauge
mxprobe_synapse_db_txn_mean_seconds{probe="synapse"} 0.006
# HELP mxprobe_synapse_http_5xx_ratio Share of 5xx responses between the last two scrapes, all processes, by servlet (all: every servlet).
# TYPE mxprobe_synapse_http_5xx_ratio gauge
mxprobe_synapse_http_5xx_ratio{probe="synapse",servlet="RoomSendEventRestServlet"} 0.1
mxprobe_synapse_http_5xx_ratio{probe="synapse",servlet="all"} 0.02
# HELP mxprobe_synapse_http_response_seconds Response time quantiles of 2xx answers from histogram bucket deltas between the last two scrapes, all processes (long-poll servlets: finite buckets only).
# TYPE mxprobe_synapse_http_response_seconds gauge
mxprobe_synapse_http_response_seconds{probe="synapse",quantile="0.95",servlet="RoomSendEventRestServlet"} 0.25
# HELP mxprobe_synapse_requests_per_second HTTP responses per second between the last two scrapes, all processes, by servlet (all: every servlet).
# TYPE mxprobe_synapse_requests_per_second gauge
mxprobe_synapse_requests_per_second{probe="synapse",servlet="all"} 40
# HELP mxprobe_synapse_up 1 if the last scrape of the Synapse deployment reached at least one process.
# TYPE mxprobe_synapse_up gauge
mxprobe_synapse_up{probe="synapse"} 1
`
	names := []string{"mxprobe_synapse_build_info", "mxprobe_synapse_db_txn_mean_seconds", "mxprobe_synapse_http_5xx_ratio",
		"mxprobe_synapse_http_response_seconds", "mxprobe_synapse_requests_per_second", "mxprobe_synapse_up"}
	if err := testutil.GatherAndCompare(m, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// A failed scrape: up 0, no stale signals.
	m.Observe(probes.Result{Probe: "synapse", Type: synapseType, Outcome: probes.OutcomeFailure,
		Steps: []probes.Step{{Name: "scrape", OK: false, Class: probes.ClassUnreachable}}})
	want = `
# HELP mxprobe_synapse_up 1 if the last scrape of the Synapse deployment reached at least one process.
# TYPE mxprobe_synapse_up gauge
mxprobe_synapse_up{probe="synapse"} 0
`
	if err := testutil.GatherAndCompare(m, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}

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

// synapseType is the synapse_metrics probe type's name (config.TypeSynapseMetrics).
const synapseType = "synapse_metrics"

// counts is a prober that declares these Result.Counts keys.
type counts []string

func (counts) Run(context.Context, string) probes.Result { return probes.Result{} }
func (c counts) DeclaredCounts() []string                { return c }
