package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

const alertmanagerBin = "/usr/bin/prometheus-alertmanager"

// startAlertmanager runs Debian's Alertmanager on a loopback port with a
// temporary storage path and no gossip; it is stopped at cleanup.
func startAlertmanager(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(alertmanagerBin); err != nil {
		if os.Getenv(testenv.SkipEnv) == "1" {
			t.Skipf("SKIPPED integration test (%s=1): %s not installed", testenv.SkipEnv, alertmanagerBin)
		}
		t.Fatalf("%s not found: install the Debian package prometheus-alertmanager (.ci/run does)", alertmanagerBin)
	}
	testenv.MarkIntegration(t, "real Alertmanager")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte("route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(alertmanagerBin, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	logf, _ := os.Create(filepath.Join(dir, "am.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		logf.Close()
	})
	base := "http://" + addr
	waitFor(t, "Alertmanager ready", 30*time.Second, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return base
}

type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
	GeneratorURL string `json:"generatorURL"`
}

func amAlerts(t *testing.T, base, query string) []amAlert {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAlertmanagerRealServer: a firing alert appears in a real Alertmanager's
// /api/v2/alerts with the expected labels, and ends when resolved.
func TestAlertmanagerRealServer(t *testing.T) {
	base := startAlertmanager(t)
	cfg := parse(t, fmt.Sprintf(`
global: {homeserver_url: "http://127.0.0.1:1", external_url: "http://status.example"}
tenants: [{id: acme, bot: {user: bot-acme, password: x}}]
probes: [{name: login, type: login}]
alerting:
  rules: [{name: LoginFailing, probe: login, failures: 1, severity: critical, labels: {team: matrix}, annotations: {description: "the bot cannot log in"}}]
  notifiers: [{name: am, type: alertmanager, alertmanager: {urls: [%q], resend_interval: 1s}}]
`, base))
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer httpc.CloseIdleConnections()
	m := newManager(t, cfg, httpc)
	m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeFailure, Class: probes.ClassAuthFailed, FailedStep: "login"})

	var got []amAlert
	waitFor(t, "the alert in Alertmanager", 15*time.Second, func() bool {
		got = amAlerts(t, base, "filter=alertname%3D%22LoginFailing%22")
		return len(got) == 1 && got[0].Status.State == "active"
	})
	want := map[string]string{"alertname": "LoginFailing", "tenant": "acme", "probe": "login", "severity": "critical", "team": "matrix", "rule": "LoginFailing"}
	for k, v := range want {
		if got[0].Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, got[0].Labels[k], v, got[0].Labels)
		}
	}
	// The rule sets no runbook_url: Alertmanager gets the default one, for
	// its own receivers' templates (.Annotations.runbook_url).
	if got[0].Annotations["description"] == "" || got[0].Annotations["runbook_url"] != alerts.RunbookBase+"login-failing-or-slow" ||
		got[0].Annotations["failure_class"] != "auth_failed" || got[0].GeneratorURL != "http://status.example/?tenant=acme" {
		t.Errorf("annotations/generatorURL: %+v", got[0])
	}
	// Re-sent while firing: endsAt moves forward.
	firstEnd := got[0].EndsAt
	waitFor(t, "a resend extending endsAt", 15*time.Second, func() bool {
		a := amAlerts(t, base, "filter=alertname%3D%22LoginFailing%22")
		return len(a) == 1 && a[0].EndsAt.After(firstEnd)
	})

	m.Observe(probes.Result{Probe: "login", Tenant: "acme", Outcome: probes.OutcomeSuccess})
	waitFor(t, "the alert to end", 15*time.Second, func() bool {
		return len(amAlerts(t, base, "filter=alertname%3D%22LoginFailing%22&active=true")) == 0
	})
	all := amAlerts(t, base, "filter=alertname%3D%22LoginFailing%22&active=true&inhibited=true&silenced=true&unprocessed=true")
	if len(all) != 0 {
		t.Fatalf("alert still active after resolve: %+v", all)
	}
	_ = context.Background
	_ = alerts.StateFiring
}

// TestAlertmanagerEndsAt: a firing alert's endsAt is four times the longer
// of the resend interval and the alert's refresh interval ahead, as
// Prometheus takes the longer of resend delay and evaluation interval: with
// a probe every 2 minutes, a 10 s resend interval must not let the alert
// lapse before the next probe (or a new shard owner's first) confirms it.
func TestAlertmanagerEndsAt(t *testing.T) {
	var mu sync.Mutex
	var got []amAlert
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var as []amAlert
		if err := json.NewDecoder(r.Body).Decode(&as); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, as...)
		mu.Unlock()
	}))
	defer srv.Close()
	am := notify.NewAlertmanager("am", []string{srv.URL}, 10*time.Second, notify.Options{HTTP: srv.Client()})
	for _, c := range []struct{ refresh, want time.Duration }{
		{0, 40 * time.Second},
		{5 * time.Second, 40 * time.Second},
		{2 * time.Minute, 8 * time.Minute},
	} {
		got = nil
		before := time.Now()
		if _, err := am.Notify(context.Background(), alerts.Notification{Rule: "r", State: alerts.StateFiring,
			Labels: map[string]string{"alertname": "r"}, FiredAt: before, RefreshInterval: c.refresh}); err != nil {
			t.Fatal(err)
		}
		after := time.Now()
		mu.Lock()
		if len(got) != 1 || got[0].EndsAt.Before(before.Add(c.want).Truncate(time.Second)) || got[0].EndsAt.After(after.Add(c.want)) {
			t.Errorf("refresh %s: posted %+v, want endsAt %s ahead", c.refresh, got, c.want)
		}
		mu.Unlock()
	}
}
