package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/shard"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

// reloadTestConfig is a configuration with a MAS bot, versions and
// synapse_metrics probes, one alert rule and a console notifier; the
// arguments vary what a reload changes.
type reloadTestConfig struct {
	hs, serverName, masURL, upstreamURL string
	user, email, password               string
	redirectURI                         string
	versionsSchedule                    string
	synapseURL                          string
	evalInterval                        string
	notifiers                           string // YAML list items under alerting.notifiers
	dir                                 string
}

func (c reloadTestConfig) String() string {
	return fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
  jitter: 0
  shutdown_grace: 2s
  data_dir: %s
synapse_limits:
  disabled: true
mas:
  public_url: %s
  redirect_uri: %s
  upstream: {adapter: openmeet, api_url: %s}
  login_budget: {logins: 1000, window: 1s}  # two logins in a row on purpose
tenants:
  - id: masdemo
    name: Demo tenant
    bot: {method: mas_oidc, user: %s, email: %s, password: %s}
probes:
  - name: login
    type: login
    schedule: "@every 1h"
    timeout: 10s
  - name: versions
    type: versions
    schedule: %q
    timeout: 5s
  - name: synapse
    type: synapse_metrics
    schedule: "@every 1h"
    timeout: 5s
    synapse: {url: %s}
alerting:
  state_file: %s
  evaluation_interval: %s
  rules:
    - {name: versions-down, probe: versions, failures: 1}
  notifiers:
%s`, c.hs, c.serverName, c.dir, c.masURL, c.redirectURI, c.upstreamURL, c.user, c.email, c.password,
		c.versionsSchedule, c.synapseURL, filepath.Join(c.dir, "alerts.json"), c.evalInterval, c.notifiers)
}

// synapsePage serves a real Synapse metrics fragment.
func synapsePage(t *testing.T) *httptest.Server {
	t.Helper()
	page, err := os.ReadFile(filepath.Join("..", "..", "probes", "synapse", "testdata", "real_fragment_test_metrics.prom"))
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(page)
	}))
	t.Cleanup(s.Close)
	return s
}

func masRedirectURI(t *testing.T, d *daemon) string {
	t.Helper()
	m, ok := d.stores.auth.LoginMethod(config.MethodMASOIDC)
	if !ok {
		t.Fatal("no mas_oidc login method in force")
	}
	return m.(*auth.MASMethod).Config.RedirectURI
}

func alertStates(d *daemon) map[string]alerts.AlertInfo {
	out := map[string]alerts.AlertInfo{}
	if m := d.stores.alerts.Load(); m != nil {
		for _, a := range m.Alerts() {
			out[a.Rule+"/"+a.Tenant] = a
		}
	}
	return out
}

// TestRejectedReloadChangesNothing is issue 16's "Done when" 1, first half:
// a configuration that assemble rejects (a Slack notifier in a sharded
// deployment) but that also changes the MAS redirect_uri, the rules'
// evaluation interval, a schedule and the notifiers leaves every one of them
// as it was.
func TestRejectedReloadChangesNothing(t *testing.T) {
	dir := t.TempDir()
	base := reloadTestConfig{hs: "http://127.0.0.1:1", serverName: "example.org", masURL: "http://127.0.0.1:2",
		upstreamURL: "http://127.0.0.1:3", user: "openmeet-bot-a", email: "a@example.org", password: "pw",
		redirectURI: "http://localhost:9005/auth/matrix/callback", versionsSchedule: "@every 1h",
		synapseURL: "http://127.0.0.1:4/_synapse/metrics", evalInterval: "15s", dir: dir,
		notifiers: "    - {name: console, type: console}\n"}
	path := writeFile(t, "mxprobe.yml", base.String())
	d, err := newDaemon(&cli{configFile: path, shard: shard.Shard{Index: 0, Count: 2}}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	defer d.shutdown()

	cfg0 := d.config()
	job0, _ := d.engine.Job("versions")
	redirect0 := masRedirectURI(t, d)
	am := d.stores.alerts.Load()
	eval0 := am.EvaluationInterval()
	// Make the rule fire, so "the rules" have a state to lose.
	if _, err := d.engine.Run(context.Background(), "versions", ""); err != nil {
		t.Fatal(err)
	}
	states0 := alertStates(d)
	if states0["versions-down/"].State != alerts.StateFiring {
		t.Fatalf("the rule did not fire on a failed run: %+v", states0)
	}

	bad := base
	bad.redirectURI = "http://localhost:9999/other/callback"
	bad.versionsSchedule = "@every 5m"
	bad.evalInterval = "5s"
	bad.notifiers = "    - {name: console, type: console}\n    - name: slack\n      type: slack\n      slack: {webhook_url: https://hooks.slack.example/services/T/B/x}\n"
	if err := os.WriteFile(path, []byte(bad.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	err = d.reload()
	if err == nil || !strings.Contains(err.Error(), "must alert through Alertmanager") {
		t.Fatalf("reload error = %v, want the sharded-notifier rejection", err)
	}
	if !strings.Contains(scrape(t, d), "mxprobe_config_last_reload_successful 0") {
		t.Error("mxprobe_config_last_reload_successful is not 0 after a rejected reload")
	}
	if d.config() != cfg0 {
		t.Error("the configuration in force changed")
	}
	if got := masRedirectURI(t, d); got != redirect0 {
		t.Errorf("MAS redirect_uri in force changed to %q (was %q)", got, redirect0)
	}
	if job, _ := d.engine.Job("versions"); job != job0 || job.Schedule != job0.Schedule {
		t.Error("the versions job (its schedule) changed")
	}
	if d.stores.alerts.Load() != am || am.EvaluationInterval() != eval0 {
		t.Errorf("alert manager or evaluation interval changed: %s, want %s", am.EvaluationInterval(), eval0)
	}
	if got := alertStates(d); len(got) != len(states0) || got["versions-down/"].State != alerts.StateFiring ||
		!got["versions-down/"].Since.Equal(states0["versions-down/"].Since) {
		t.Errorf("alert states changed: %+v, were %+v", got, states0)
	}
	// The notifiers in force: still the console one only.
	if notifiers := am.Notifiers(); strings.Join(notifiers, ",") != "console" {
		t.Errorf("notifiers in force: %v, want [console]", notifiers)
	}
}

// TestValidReloadKeepsState is issue 16's "Done when" 1, second half: a
// valid reload that changes the configuration keeps the login sessions, the
// MAS client registration (no second registration request reaches the
// emulator), the Synapse baselines and the alert states, and applies the new
// evaluation_interval.
func TestValidReloadKeepsState(t *testing.T) {
	emu, err := masemu.Start(masemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	const user, email, pw = "openmeet-bot-reload", "bot-reload@openmeet.net", "platform-pw"
	emu.AddUpstreamUser("masdemo", email, pw, user)
	page := synapsePage(t)
	dir := t.TempDir()
	cfg := reloadTestConfig{hs: emu.HomeserverURL, serverName: emu.ServerName, masURL: emu.MASURL,
		upstreamURL: emu.UpstreamURL, user: user, email: email, password: pw,
		redirectURI: "http://localhost:9005/auth/matrix/callback", versionsSchedule: "@every 1h",
		synapseURL: page.URL + "/_synapse/metrics", evalInterval: "15s", dir: dir,
		notifiers: "    - {name: console, type: console}\n"}
	path := writeFile(t, "mxprobe.yml", cfg.String())
	d, err := newDaemon(&cli{configFile: path}, discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	defer d.shutdown()
	ctx := context.Background()
	run := func(probe, tenant string) probes.Result {
		t.Helper()
		r, err := d.engine.Run(ctx, probe, tenant)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := run("login", "masdemo"); r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("login: %s at %s: %s", r.Class, r.FailedStep, r.Error)
	}
	if r := run("synapse", ""); r.Outcome == probes.OutcomeFailure {
		t.Fatalf("synapse_metrics: %s at %s: %s", r.Class, r.FailedStep, r.Error)
	}
	regs := emu.Stats().Registrations
	if regs != 1 {
		t.Fatalf("%d client registrations after the first login, want 1", regs)
	}
	sessions := d.stores.auth.Sessions()
	if len(sessions) != 1 {
		t.Fatalf("%d cached sessions, want 1", len(sessions))
	}
	baselines := d.stores.synapse.Len()
	if baselines == 0 {
		t.Fatal("no Synapse baseline after a scrape")
	}

	// A failed versions run (the emulator's homeserver answers /versions,
	// so the failure is fed to the alert manager as the Result it would be).
	d.stores.alerts.Load().Observe(probes.Result{Probe: "versions", Type: matrix.TypeVersions, Outcome: probes.OutcomeFailure,
		Class: probes.ClassUnreachable, Error: "test", Started: time.Now()})
	states0 := alertStates(d)
	if states0["versions-down/"].State != alerts.StateFiring {
		t.Fatalf("the rule did not fire: %+v", states0)
	}

	next := cfg
	next.evalInterval = "5s"
	next.versionsSchedule = "@every 30m"
	if err := os.WriteFile(path, []byte(next.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg0 := d.config()
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	if d.config() == cfg0 {
		t.Fatal("the changed configuration was not applied")
	}
	if got := d.stores.alerts.Load().EvaluationInterval(); got != 5*time.Second {
		t.Errorf("evaluation interval after the reload: %s, want 5s", got)
	}
	var key string
	for k := range sessions {
		key = k
	}
	if got := d.stores.auth.Sessions(); len(got) != 1 || got[key] != sessions[key] {
		t.Errorf("sessions after the reload: %v, want the same %v", got, sessions)
	}
	if got := d.stores.synapse.Len(); got != baselines {
		t.Errorf("%d Synapse baselines after the reload, want %d", got, baselines)
	}
	job, _ := d.engine.Job("synapse")
	if sp, ok := job.Prober.(*synapse.Probe); !ok || sp.Store != d.stores.synapse {
		t.Error("the new synapse_metrics prober does not use the kept baselines")
	}
	if got := alertStates(d); got["versions-down/"].State != alerts.StateFiring || !got["versions-down/"].Since.Equal(states0["versions-down/"].Since) {
		t.Errorf("alert state after the reload: %+v, was %+v", got["versions-down/"], states0["versions-down/"])
	}
	// A new login after the reload uses the registered client: no second
	// registration request.
	d.stores.auth.Forget(key)
	if r := run("login", "masdemo"); r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("login after the reload: %s at %s: %s", r.Class, r.FailedStep, r.Error)
	}
	if got := emu.Stats().Registrations; got != regs {
		t.Errorf("%d client registrations after the reload, want %d (no new registration)", got, regs)
	}
}
