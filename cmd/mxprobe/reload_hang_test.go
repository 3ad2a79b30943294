package main

import (
	"errors"
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

// hangingReload starts `mxprobe serve` on a good configuration, then
// rewrites it to read its API token from a FIFO nobody writes (a secret
// file on a hung mount) and sends SIGHUP. It returns once the daemon's
// reload is blocked reading the FIFO, with the FIFO's writing end.
func hangingReload(t *testing.T, args ...string) (proc *testenv.Proc, log *testenv.SyncBuffer, addr string, fifoW *os.File) {
	t.Helper()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "api-token")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	base := "global: {shutdown_grace: 1s}\nprobes:\n  - {name: h, type: http, schedule: \"@every 1h\", http: {url: \"http://127.0.0.1:1/\"}}\n"
	cfg := filepath.Join(dir, "mx.yml")
	if err := os.WriteFile(cfg, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(mxprobeBin(t), append([]string{"serve", "--config.file", cfg, "--web.listen-address", addr}, args...)...)
	log = &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if proc, err = testenv.StartProc(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Stop(syscall.SIGKILL, 10*time.Second) })
	waitUntil(t, "the daemon is ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if err := os.WriteFile(cfg, []byte(base+"web: {api_token_file: "+fifo+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := proc.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// A non-blocking open for writing succeeds once a reader has the FIFO
	// open: then the reload is blocked reading it (nothing is written).
	var w *os.File
	waitUntil(t, "the reload opens the token FIFO", func() bool {
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return false
		}
		w = f
		return true
	})
	t.Cleanup(func() { w.Close() })
	return proc, log, addr, w
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSIGTERMDuringHangingReload: SIGTERM while a reload is stuck ends the
// process within shutdown_grace (main left it waiting on the reload for
// ever), with a clean exit.
func TestSIGTERMDuringHangingReload(t *testing.T) {
	proc, log, _, _ := hangingReload(t)
	start := time.Now()
	if err := proc.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-proc.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after SIGTERM during a reload:\n%s", log.String())
	}
	took := time.Since(start)
	if err := proc.Err(); err != nil {
		t.Fatalf("exit: %v\n%s", err, log.String())
	}
	t.Logf("exited %v after SIGTERM (shutdown_grace 1s)", took.Round(time.Millisecond))
}

// TestReloadTimeout: a reload that does not finish within
// --config.reload-timeout is reported failed and changes nothing; the
// daemon goes on serving and, once the hung file answers, applies nothing
// late.
func TestReloadTimeout(t *testing.T) {
	proc, log, addr, fifo := hangingReload(t, "--config.reload-timeout", "300ms", "--log.level", "debug")
	waitUntil(t, "the reload is reported failed", func() bool {
		return strings.Contains(log.String(), "took longer than 300ms (--config.reload-timeout)")
	})
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "mxprobe_config_last_reload_successful 0") {
		t.Errorf("reload metric:\n%s", grepLines(string(body), "reload"))
	}
	// The file now answers with a good token: the late load succeeds, and
	// is dropped; the old configuration (no token) stays in force. (A
	// regular file takes the FIFO's place first, for the loads's later
	// reads of the token file; the blocked read keeps the FIFO.)
	const tok = "9f86d081884c7d659a2feaa0c55ad015\n"
	path := fifo.Name()
	if err := os.WriteFile(path+".new", []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	if _, err := fifo.WriteString(tok); err != nil {
		t.Fatal(err)
	}
	fifo.Close()
	waitUntil(t, "the late load is dropped", func() bool {
		return strings.Contains(log.String(), "finished after its reload gave up; dropped")
	})
	resp, err = http.Post("http://"+addr+"/api/v1/silences", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		t.Errorf("a late reload changed the configuration")
	}
	proc.Stop(syscall.SIGTERM, 20*time.Second)
	if err := proc.Err(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("exit: %v\n%s", err, log.String())
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
