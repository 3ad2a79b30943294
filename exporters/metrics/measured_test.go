package metrics

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/mxprobe/mxprobe/probes"
)

// scrapeText is the exposition of m (what /metrics serves).
func scrapeText(t *testing.T, m *Metrics) string {
	t.Helper()
	fams, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// Issue 22, item 5: a round trip refused with 429 at its peer's login (or
// skipped by the login budget) measured nothing: probe_success, the last
// run and success timestamps and the last latencies stay as the last
// measured run left them, and the 429 counts under its login step.
func TestRunThatMeasuredNothingMovesNothing(t *testing.T) {
	m := New()
	t0 := time.Unix(1_700_000_000, 0)
	m.Observe(probes.Result{Probe: "roundtrip", Tenant: "acme", Outcome: probes.OutcomeSuccess, Started: t0, Duration: 2 * time.Second,
		Steps: []probes.Step{{Name: "create_room", OK: true, Duration: time.Second}}})
	before := scrapeText(t, m)
	refused := probes.Result{Probe: "roundtrip", Tenant: "acme", Outcome: probes.OutcomeWarning, Class: probes.ClassRateLimited,
		FailedStep: "peer_login", Started: t0.Add(10 * time.Minute), Duration: time.Second,
		Steps:  []probes.Step{{Name: "peer_login", Class: probes.ClassRateLimited, Status: 429}},
		Counts: map[string]int{"rate_limited:peer_login": 1}}
	if !refused.MeasuredNothing() {
		t.Fatal("a run refused at its peer's login measured something?")
	}
	m.Observe(refused)
	m.Observe(probes.Result{Probe: "roundtrip", Tenant: "acme", Outcome: probes.OutcomeSkipped, Class: probes.ClassLoginBudget,
		Started: t0.Add(20 * time.Minute)})
	after := scrapeText(t, m)
	for _, fam := range []string{"mxprobe_probe_success{", "mxprobe_probe_last_success_timestamp_seconds{",
		"mxprobe_probe_last_run_timestamp_seconds{", "mxprobe_probe_last_duration_seconds{", "mxprobe_probe_last_step_duration_seconds{"} {
		if a, b := lines(before, fam), lines(after, fam); a != b || a == "" {
			t.Errorf("%s moved:\nbefore %s\nafter  %s", fam, a, b)
		}
	}
	if !strings.Contains(after, `mxprobe_rate_limited_total{probe="roundtrip",step="peer_login",tenant="acme"} 1`) {
		t.Errorf("the login's 429 is not counted:\n%s", lines(after, "mxprobe_rate_limited_total"))
	}
	// A 429 after a measured step is a warning that measured something.
	measured := refused
	measured.FailedStep = "invite"
	measured.Steps = []probes.Step{{Name: "login", OK: true}, {Name: "create_room", OK: true}, {Name: "invite", Class: probes.ClassRateLimited}}
	if measured.MeasuredNothing() {
		t.Error("a run refused after create_room counted as measuring nothing")
	}
}

func lines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
