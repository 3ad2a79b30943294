package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// TestServeGCTarget: `mxprobe serve` runs with its own GC target (20 %,
// gcPercent) unless GOGC says otherwise, as its /metrics shows
// (go_gc_gogc_percent).
func TestServeGCTarget(t *testing.T) {
	bin := testenv.BuildMxprobe(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mxprobe.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  homeserver_url: http://127.0.0.1:9\nprobes:\n  - name: versions\n    type: versions\n    schedule: \"@every 1h\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ env, want string }{{"", "20"}, {"GOGC=75", "75"}} {
		port, err := testenv.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin, "serve", "--config.file", cfg, "--web.listen-address", addr, "--log.level", "error")
		cmd.Env = os.Environ()
		for i, kv := range cmd.Env {
			if strings.HasPrefix(kv, "GOGC=") {
				cmd.Env[i] = "MXPROBE_UNSET=" // the test's own GOGC must not decide
			}
		}
		if c.env != "" {
			cmd.Env = append(cmd.Env, c.env)
		}
		p, err := testenv.StartProc(cmd)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && got == ""; time.Sleep(100 * time.Millisecond) {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(body), "\n") {
				if v, ok := strings.CutPrefix(l, "go_gc_gogc_percent "); ok {
					got = v
				}
			}
		}
		p.Stop(syscall.SIGTERM, 10*time.Second)
		if got != c.want {
			t.Errorf("%q: go_gc_gogc_percent %q, want %s", c.env, got, c.want)
		}
	}
}
