package alerts

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

// runbookAnchors returns the anchors of docs/runbook.md's headings; the
// Prometheus rules' runbook_url are checked the same way
// (deploy/alerts_test.go).
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	anchors, err := testenv.MarkdownAnchors(filepath.Join("..", "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !anchors["mxprobedown"] || !anchors["troubleshooting"] {
		t.Fatalf("docs/runbook.md headings not found: %v", anchors)
	}
	return anchors
}

// TestDefaultRunbooksExist: whatever probe type and condition a rule has,
// the runbook_url mxprobe gives it is a section of docs/runbook.md. The
// types are the ones the daemon ships (versions, login, roundtrip,
// room_message, http, synapse_metrics, media, federation,
// federation_roundtrip, tls) and one it does not know.
func TestDefaultRunbooksExist(t *testing.T) {
	anchors := runbookAnchors(t)
	shipped := []string{"versions", "login", "roundtrip", "room_message", "http", "synapse_metrics",
		"media", "federation", "federation_roundtrip", "tls"}
	types := append(shipped, "no_such_type", "")
	conds := map[string]config.AlertRule{
		"failures":      {Failures: 1},
		"success_ratio": {SuccessRatio: &config.SuccessRatioCond{Below: 0.9}},
		"threshold":     {Threshold: &config.ThresholdCond{Signal: "duration"}},
		"anomaly":       {Anomaly: &config.AnomalyCond{Signal: "duration"}},
		"stale":         {Stale: &config.StaleCond{Intervals: 3}},
	}
	seen := map[string]bool{}
	for _, typ := range types {
		for cond, r := range conds {
			if r.Condition() != cond {
				t.Fatalf("condition %q is %q", cond, r.Condition())
			}
			u := withRunbook(r, typ)[RunbookAnnotation]
			anchor, ok := strings.CutPrefix(u, RunbookBase)
			if !ok {
				t.Errorf("%s rule on a %q probe: runbook_url %q is not %s<section>", cond, typ, u, RunbookBase)
				continue
			}
			if !anchors[anchor] {
				t.Errorf("%s rule on a %q probe: docs/runbook.md has no section #%s", cond, typ, anchor)
			}
			seen[anchor] = true
		}
	}
	// Every shipped type has a section of its own, not the general one.
	for _, typ := range shipped {
		if a := runbookAnchor(typ, "failures"); a == runbookFallback {
			t.Errorf("probe type %s has no runbook section of its own", typ)
		}
	}
	if len(seen) != 9 {
		t.Errorf("sections reached: %v, want the general one and eight per type or condition", seen)
	}
}

// TestRunbookAnnotation: a rule without runbook_url gets the section of its
// probe type, a stale rule the staleness section, a rule's own URL wins, an
// empty one removes the link; the configuration's annotations stay as
// written. Checked on what a notifier receives and on the API's view.
func TestRunbookAnnotation(t *testing.T) {
	cfg := parseCfg(t, baseCfg+`
alerting:
  rules:
    - {name: plain, probe: login, failures: 1}
    - {name: own, probe: login, failures: 1, annotations: {runbook_url: "https://wiki.example/login", team: matrix}}
    - {name: off, probe: login, failures: 1, annotations: {runbook_url: ""}}
    - {name: stuck, probe: login, stale: {intervals: 2}}
`)
	clk := &fakeClock{t: time.Date(2030, 1, 7, 12, 0, 0, 0, time.UTC)}
	rec := &recorder{name: "rec"}
	m, err := New(Options{Config: cfg, Notifiers: []Notifier{rec}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure, Class: probes.ClassAuthFailed, FailedStep: "login"})
	clk.Add(10 * time.Minute) // five intervals of @every 1m without a result
	m.Tick()
	m.deliverNow()

	want := map[string]string{
		"plain": RunbookBase + "login-failing-or-slow",
		"own":   "https://wiki.example/login",
		"off":   "",
		"stuck": RunbookBase + "a-probe-produced-no-result",
	}
	got := map[string]Notification{}
	rec.mu.Lock()
	for _, n := range rec.got {
		if n.Tenant == "acme" {
			got[n.Rule] = n
		}
	}
	rec.mu.Unlock()
	for rule, u := range want {
		n, ok := got[rule]
		if !ok {
			t.Errorf("rule %s: no notification for acme (got %v)", rule, rec.states())
			continue
		}
		v, set := n.Annotations[RunbookAnnotation]
		if v != u || set != (u != "") {
			t.Errorf("rule %s: runbook_url %q (set %v), want %q", rule, v, set, u)
		}
	}
	if got["own"].Annotations["team"] != "matrix" || got["plain"].Annotations["summary"] == "" {
		t.Errorf("other annotations lost: %v, %v", got["own"].Annotations, got["plain"].Annotations)
	}
	for _, a := range m.Alerts() {
		if a.Tenant == "acme" && a.Annotations[RunbookAnnotation] != want[a.Rule] {
			t.Errorf("API view of %s: runbook_url %q, want %q", a.Rule, a.Annotations[RunbookAnnotation], want[a.Rule])
		}
	}
	for _, r := range cfg.Alerting.Rules {
		if r.Name == "plain" || r.Name == "stuck" {
			if _, set := r.Annotations[RunbookAnnotation]; set {
				t.Errorf("rule %s: the configuration was written: %v", r.Name, r.Annotations)
			}
		}
	}
}
