package alerts

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

func TestStateFileCorruptOrOld(t *testing.T) {
	for name, content := range map[string]string{
		"corrupt":    `{"format": 2, "entries": [`,
		"old format": `{"format": 1, "alerts": {}}`,
		"no format":  `{"entries": []}`,
		"garbage":    "\x00\x01binary",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "alerts.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := parseCfg(t, baseCfg+"alerting: {rules: [{name: r, probe: login, failures: 1}]}\n")
			cfg.Global.DataDir = dir
			m, err := New(Options{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(m.LoadReport, path) || !(strings.Contains(m.LoadReport, "corrupt") || strings.Contains(m.LoadReport, "format")) {
				t.Fatalf("load report does not say what is wrong: %q", m.LoadReport)
			}
			m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure})
			if err := m.Save(); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			var st stateFile
			if err := json.Unmarshal(b, &st); err != nil || st.Format != stateFormat || len(st.Entries) != 1 {
				t.Fatalf("state file not replaced by a valid one: %v %s", err, b)
			}
			if _, err := os.Stat(path + ".bad"); err != nil {
				t.Errorf("the bad file was not kept aside: %v", err)
			}
		})
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := parseCfg(t, baseCfg+"alerting: {state_file: "+filepath.Join(dir, "s.json")+", rules: [{name: r, probe: login, failures: 1}]}\n")
	clk := &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	rec := &recorder{name: "rec"}
	m, err := New(Options{Config: cfg, Notifiers: []Notifier{rec}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure})
	m.deliverNow()
	// A "crash": no Stop, a new manager on the same file.
	rec2 := &recorder{name: "rec"}
	m2, err := New(Options{Config: cfg, Notifiers: []Notifier{rec2}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m2.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure})
	m2.deliverNow()
	if rec2.states() != "" {
		t.Fatalf("firing repeated after restart: %s", rec2.states())
	}
	m2.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeSuccess})
	// Crash again before the resolve is delivered: it is still owed.
	m3, err := New(Options{Config: cfg, Notifiers: []Notifier{rec2}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	m3.deliverNow()
	m3.deliverNow()
	if rec2.states() != "resolved" {
		t.Fatalf("after restart with a pending resolve: %q, want one resolved", rec2.states())
	}
	if got := rec2.got[0].Ref; got != "ref-"+rec2.got[0].ID {
		t.Errorf("resolve lost the firing ref: %q", got)
	}
}
