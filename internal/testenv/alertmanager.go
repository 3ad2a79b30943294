package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// AlertmanagerBin is Debian's Alertmanager (package prometheus-alertmanager).
const AlertmanagerBin = "/usr/bin/prometheus-alertmanager"

// StartAlertmanager runs Debian's Alertmanager on a loopback port with a
// temporary storage path, no gossip and a receiver that sends nothing, until
// the test ends; it returns the base URL once /-/ready answers.
func StartAlertmanager(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(AlertmanagerBin); err != nil {
		if os.Getenv(SkipEnv) == "1" {
			t.Skipf("SKIPPED integration test (%s=1): %s not installed", SkipEnv, AlertmanagerBin)
		}
		t.Fatalf("%s not found: install the Debian package prometheus-alertmanager (.ci/run does)", AlertmanagerBin)
	}
	MarkIntegration(t, "real Alertmanager")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, []byte("route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(AlertmanagerBin, "--config.file="+cfg, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	p, log := StartForTest(t, "alertmanager", cmd)
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/-/ready", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if err == nil && resp.StatusCode == http.StatusOK {
			return base
		}
		select {
		case <-p.Done():
			t.Fatalf("alertmanager exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager not ready after 30s:\n%s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
