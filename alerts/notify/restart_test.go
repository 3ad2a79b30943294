package notify_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/internal/testenv"
)

// TestRestartSIGKILL: `mxprobe serve` is killed with SIGKILL while an alert
// fires, and restarted on the same data_dir: no second firing notification;
// the resolve after the restart is delivered once.
func TestRestartSIGKILL(t *testing.T) {
	bin := testenv.BuildMxprobe(t)
	d := testenv.SharedDendrite(t)
	user, pw := d.User(t, "restartbot")

	var mu sync.Mutex
	var got []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var p notify.WebhookPayload
		_ = json.Unmarshal(b, &p)
		mu.Lock()
		got = append(got, string(p.Status))
		mu.Unlock()
	}))
	defer hook.Close()
	states := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(got, ",") }

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	cfg := fmt.Sprintf(`
global: {homeserver_url: %q, server_name: %q, data_dir: %q}
synapse_limits: {disabled: true}   # a failing login every second on purpose
tenants: [{id: acme, bot: {user: %q, password: %q}}]
probes: [{name: login, type: login, schedule: "@every 1s", timeout: 10s}]
alerting:
  evaluation_interval: 1s
  rules: [{name: login_failing, probe: login, failures: 2, successes: 1}]
  notifiers: [{name: hook, type: webhook, webhook: {url: %q}}]
`, d.URL, d.ServerName, filepath.Join(dir, "data"), user, pw, hook.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(name string) (*exec.Cmd, chan struct{}, int) {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config.file", cfgPath, "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port))
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		return cmd, done, port
	}
	// firingSaved: the state file records the firing notification as
	// delivered to the hook (the state is saved right after delivery).
	firingSaved := func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "data", "alerts.json"))
		if err != nil {
			return false
		}
		var st struct {
			Entries []struct {
				Rule       string `json:"rule"`
				Deliveries map[string]struct {
					Firing bool `json:"firing"`
				} `json:"deliveries"`
			} `json:"entries"`
		}
		if json.Unmarshal(b, &st) != nil {
			return false
		}
		for _, e := range st.Entries {
			if e.Rule == "login_failing" && e.Deliveries["hook"].Firing {
				return true
			}
		}
		return false
	}
	// runs is how many login runs with result the daemon on port finished.
	runs := func(port int, result string) int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		prefix := fmt.Sprintf(`mxprobe_probe_runs_total{probe="login",result=%q,tenant="acme"} `, result)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				var n int
				_, _ = fmt.Sscan(v, &n)
				return n
			}
		}
		return 0
	}
	ctxChange := func(from, to string) {
		t.Helper()
		ctx, cancel := contextTimeout(15 * time.Second)
		defer cancel()
		if err := d.ChangePassword(ctx, user, from, to); err != nil {
			t.Fatal(err)
		}
	}

	ctxChange(pw, pw+"-rotated") // the configured password is now wrong
	cmd, done, _ := start("first")
	waitFor(t, "the firing notification", 60*time.Second, func() bool { return states() == "firing" })
	waitFor(t, "the delivery in the state file", 30*time.Second, firingSaved)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done

	_, _, port := start("second")
	// Still failing for several runs after the restart (the rule fires
	// after two): nothing new. Each run's notification, had there been one,
	// leaves at once; four runs later it would have arrived.
	waitFor(t, "four failed runs after the restart", 60*time.Second, func() bool { return runs(port, "failure") >= 4 })
	if s := states(); s != "firing" {
		b, _ := os.ReadFile(filepath.Join(dir, "second.log"))
		t.Fatalf("after the restart: notifications %q, want only the first firing\n%s", s, b)
	}
	ctxChange(pw+"-rotated", pw)
	waitFor(t, "the resolved notification", 60*time.Second, func() bool { return states() == "firing,resolved" })
	ok0 := runs(port, "success")
	waitFor(t, "three more successful runs", 60*time.Second, func() bool { return runs(port, "success") >= ok0+3 })
	if s := states(); s != "firing,resolved" {
		t.Fatalf("notifications %q, want firing,resolved exactly once each", s)
	}
}
