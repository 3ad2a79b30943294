package synapse

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mxprobe/mxprobe/probes"
)

// TestMetrics: the type's Metrics hook registers the mxprobe_synapse_*
// gauges and its Observer feeds them from the last Result of each probe;
// Results of other types and skipped runs leave them as they are.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	observe, err := Type().Metrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	observe(probes.Result{Probe: "synapse", Type: TypeSynapseMetrics, Outcome: probes.OutcomeSuccess,
		Steps: []probes.Step{{Name: StepScrape, OK: true}, {Name: StepParse, OK: true}},
		Signals: map[string]float64{
			"http_5xx_ratio": 0.02,
			"http_5xx_ratio:RoomSendEventRestServlet":            0.1,
			"http_response_p95_seconds:RoomSendEventRestServlet": 0.25,
			"http_requests_per_second":                           40,
			"db_txn_mean_seconds":                                0.006,
			"build_info:1.157.1":                                 1,
			"page_bytes":                                         123, // not exported
		}})
	observe(probes.Result{Probe: "other", Type: "login", Outcome: probes.OutcomeSuccess,
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
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// A failed scrape: up 0, no stale signals.
	observe(probes.Result{Probe: "synapse", Type: TypeSynapseMetrics, Outcome: probes.OutcomeFailure,
		Steps: []probes.Step{{Name: StepScrape, OK: false, Class: probes.ClassUnreachable}}})
	want = `
# HELP mxprobe_synapse_up 1 if the last scrape of the Synapse deployment reached at least one process.
# TYPE mxprobe_synapse_up gauge
mxprobe_synapse_up{probe="synapse"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// A skipped run (the previous one still going) measured nothing.
	observe(probes.Result{Probe: "synapse", Type: TypeSynapseMetrics, Outcome: probes.OutcomeSkipped,
		Steps: []probes.Step{{Name: StepScrape, OK: true}}})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}
