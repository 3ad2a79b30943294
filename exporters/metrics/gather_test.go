package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/mxprobe/mxprobe/probes"
)

// observeMix feeds runs of two probes and several tenants, in no particular
// order: failures of different steps and classes, repeated steps, a
// delivery time, a tenant that failed after succeeding.
func observeMix(m *Metrics) {
	t0 := time.Unix(1_700_000_000, 0)
	step := func(name string, ok bool) probes.Step {
		return probes.Step{Name: name, Duration: 250 * time.Millisecond, OK: ok}
	}
	for _, r := range []probes.Result{
		{Probe: "roundtrip", Tenant: "t2", Outcome: probes.OutcomeSuccess, Started: t0, Duration: time.Second,
			Steps: []probes.Step{step("login", true), step("send", true)}, Signals: map[string]float64{probes.SignalDeliverySeconds: 0.4}},
		{Probe: "login", Tenant: "t10", Outcome: probes.OutcomeFailure, Class: probes.ClassAuthFailed, FailedStep: "login", Started: t0, Duration: time.Second,
			Steps: []probes.Step{step("login", false)}},
		{Probe: "login", Tenant: "t1", Outcome: probes.OutcomeSuccess, Started: t0, Duration: time.Second,
			Steps:  []probes.Step{step("login", true), step("whoami", true)},
			Counts: map[string]int{probes.CountRateLimited + ":login": 2, probes.CountTokenRefresh: 1}},
		{Probe: "roundtrip", Tenant: "t1", Outcome: probes.OutcomeFailure, Class: probes.ClassHTTP5xx, FailedStep: "invite", Started: t0, Duration: time.Second,
			Steps: []probes.Step{step("login", true), step("create_room", true), step("invite", false)}},
		{Probe: "versions", Tenant: "", Outcome: probes.OutcomeSuccess, Started: t0, Duration: time.Second,
			Steps: []probes.Step{step("versions", true), step("well_known", true), step("versions", true)}},
		{Probe: "login", Tenant: "t2", Outcome: probes.OutcomeSuccess, Started: t0, Duration: time.Second, Steps: []probes.Step{step("login", true)}},
		{Probe: "login", Tenant: "t2", Outcome: probes.OutcomeFailure, Class: probes.ClassTimeout, Started: t0.Add(time.Minute), Duration: time.Second},
	} {
		m.Observe(r)
	}
}

// TestGatherIsWhatTheRegistryWouldServe: the per-tenant families Gather
// hands out ready are exactly what the registry's own checks and sorting
// make of them (prometheus.Gatherers checks the consistency of every series
// and sorts them), so bypassing the Collector path changes nothing a
// scraper sees.
func TestGatherIsWhatTheRegistryWouldServe(t *testing.T) {
	m := New()
	observeMix(m)
	got, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want, err := prometheus.Gatherers{m}.Gather()
	if err != nil {
		t.Fatalf("the registry's checks refuse the series: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d families, want %d", len(got), len(want))
	}
	own := map[string]bool{}
	for _, f := range tenantFamilies() {
		own[f.name] = true
	}
	compared := 0
	for i := range want {
		if got[i].GetName() != want[i].GetName() {
			t.Fatalf("family %d is %s, want %s", i, got[i].GetName(), want[i].GetName())
		}
		if !own[want[i].GetName()] {
			continue // Go and process metrics change between the two gathers
		}
		compared++
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("family %s differs from the registry's order or content:\ngot  %v\nwant %v", want[i].GetName(), got[i], want[i])
		}
	}
	if compared != len(own) {
		t.Errorf("compared %d per-tenant families, want all %d", compared, len(own))
	}
	var failed *dto.MetricFamily
	for _, mf := range got {
		if mf.GetName() == "mxprobe_probe_failed_step" {
			failed = mf
		}
	}
	if failed == nil || len(failed.Metric) != 3 {
		t.Fatalf("failed-step series: %v", failed)
	}
}

// TestLastGauges: the values of the per-tenant families.
func TestLastGauges(t *testing.T) {
	m := New()
	observeMix(m)
	want := `
# HELP mxprobe_message_delivery_last_seconds Message delivery time measured by the last run.
# TYPE mxprobe_message_delivery_last_seconds gauge
mxprobe_message_delivery_last_seconds{probe="roundtrip",tenant="t2"} 0.4
# HELP mxprobe_probe_failed_step Present (1) while the last run failed, naming the failing step and failure class.
# TYPE mxprobe_probe_failed_step gauge
mxprobe_probe_failed_step{class="auth_failed",probe="login",step="login",tenant="t10"} 1
mxprobe_probe_failed_step{class="http_5xx",probe="roundtrip",step="invite",tenant="t1"} 1
mxprobe_probe_failed_step{class="timeout",probe="login",step="run",tenant="t2"} 1
# HELP mxprobe_probe_last_step_duration_seconds Duration of each step of the last run (steps that did not run are absent).
# TYPE mxprobe_probe_last_step_duration_seconds gauge
mxprobe_probe_last_step_duration_seconds{probe="login",step="login",tenant="t1"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="login",step="login",tenant="t10"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="login",step="whoami",tenant="t1"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="roundtrip",step="create_room",tenant="t1"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="roundtrip",step="invite",tenant="t1"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="roundtrip",step="login",tenant="t1"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="roundtrip",step="login",tenant="t2"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="roundtrip",step="send",tenant="t2"} 0.25
mxprobe_probe_last_step_duration_seconds{probe="versions",step="versions",tenant=""} 0.25
mxprobe_probe_last_step_duration_seconds{probe="versions",step="well_known",tenant=""} 0.25
# HELP mxprobe_probe_last_success_timestamp_seconds End time of the last successful run.
# TYPE mxprobe_probe_last_success_timestamp_seconds gauge
mxprobe_probe_last_success_timestamp_seconds{probe="login",tenant="t1"} 1.700000001e+09
mxprobe_probe_last_success_timestamp_seconds{probe="login",tenant="t2"} 1.700000001e+09
mxprobe_probe_last_success_timestamp_seconds{probe="roundtrip",tenant="t2"} 1.700000001e+09
mxprobe_probe_last_success_timestamp_seconds{probe="versions",tenant=""} 1.700000001e+09
# HELP mxprobe_probe_success Whether the last run that measured anything succeeded (1) or failed (0); a warning (rate limited) counts as success.
# TYPE mxprobe_probe_success gauge
mxprobe_probe_success{probe="login",tenant="t1"} 1
mxprobe_probe_success{probe="login",tenant="t10"} 0
mxprobe_probe_success{probe="login",tenant="t2"} 0
mxprobe_probe_success{probe="roundtrip",tenant="t1"} 0
mxprobe_probe_success{probe="roundtrip",tenant="t2"} 1
mxprobe_probe_success{probe="versions",tenant=""} 1
`
	if err := testutil.GatherAndCompare(m, strings.NewReader(want),
		"mxprobe_message_delivery_last_seconds", "mxprobe_probe_failed_step", "mxprobe_probe_last_step_duration_seconds",
		"mxprobe_probe_last_success_timestamp_seconds", "mxprobe_probe_success"); err != nil {
		t.Fatal(err)
	}
	// The registry still owns the names: a collector of the same name is refused.
	dup := prometheus.NewGauge(prometheus.GaugeOpts{Name: "mxprobe_probe_success", Help: "x"})
	if err := m.Registry.Register(dup); err == nil {
		t.Error("a second mxprobe_probe_success was registered")
	}
}
