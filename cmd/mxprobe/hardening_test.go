package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

const hardeningToken = "reload-SECRET-token-0123"

// versionsCounter is a homeserver that answers /versions and counts the
// requests: each is one probe run.
func versionsCounter(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/client/versions" {
			n.Add(1)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"versions":["v1.11"]}`)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(s.Close)
	return s, &n
}

// lateNames are probe names whose start offset inside a 2 s interval (jitter
// 0.9) is at least 0.9 s: a scheduler restarted every 0.3 s would never
// reach them, as happened when every reload restarted the schedule.
var lateNames = func() []string {
	var out []string
	for i := 0; len(out) < 3; i++ {
		n := fmt.Sprintf("versions-%d", i)
		if probes.Offset(n, "", 2*time.Second, 0.9) >= 900*time.Millisecond {
			out = append(out, n)
		}
	}
	return out
}()

func reloadConfig(hs, title string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  homeserver_url: %s\n  jitter: 0.9\n  concurrency: 4\n  shutdown_grace: 1s\nprobes:\n", hs)
	for _, name := range lateNames {
		fmt.Fprintf(&b, "  - name: %s\n    type: versions\n    schedule: \"@every 2s\"\n    timeout: 5s\n", name)
	}
	fmt.Fprintf(&b, "web:\n  api_token: %s\n  title: %q\n", hardeningToken, title)
	return b.String()
}

// TestReloadsDoNotDelayProbing is issue 15's "Done when" 1 (last part): 30
// authorised reloads through /-/reload, most of them with a changed
// configuration, do not reduce the number of probe runs compared with a
// daemon that is not reloaded, run side by side over the same window. An
// unchanged configuration is a no-op.
func TestReloadsDoNotDelayProbing(t *testing.T) {
	hsA, runsA := versionsCounter(t)
	hsB, runsB := versionsCounter(t)
	pathA := writeFile(t, "a.yml", reloadConfig(hsA.URL, "a"))
	pathB := writeFile(t, "b.yml", reloadConfig(hsB.URL, "b"))
	start := func(path string) *daemon {
		d, err := newDaemon(&cli{configFile: path, web: webHardening{lifecycle: true}}, discard())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.reload(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.shutdown)
		return d
	}
	dA, dB := start(pathA), start(pathB)
	_ = dB
	ts := httptest.NewServer(dA.web.Handler())
	defer ts.Close()
	reload := func() {
		req, _ := http.NewRequest("POST", ts.URL+"/-/reload", nil)
		req.Header.Set("Authorization", "Bearer "+hardeningToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("reload: %d", resp.StatusCode)
		}
	}

	// An unchanged configuration: nothing is rebuilt.
	cfg0 := dA.config()
	reload()
	if dA.config() != cfg0 {
		t.Fatal("a reload with an unchanged configuration replaced it")
	}

	const (
		reloads = 30
		window  = 9 * time.Second
	)
	a0, b0 := runsA.Load(), runsB.Load()
	t0 := time.Now()
	for i := range reloads {
		if i%3 != 2 { // two in three change the configuration
			if err := os.WriteFile(pathA, []byte(reloadConfig(hsA.URL, fmt.Sprintf("a-%d", i))), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		before := dA.config()
		reload()
		if changed := dA.config() != before; changed != (i%3 != 2) {
			t.Fatalf("reload %d: configuration replaced=%v", i, changed)
		}
		time.Sleep(window / reloads) // pacing only; the counts below do not depend on it
	}
	for time.Since(t0) < window {
		time.Sleep(50 * time.Millisecond)
	}
	a, b := runsA.Load()-a0, runsB.Load()-b0
	t.Logf("runs in %s: %d with %d reloads, %d without", time.Since(t0).Round(time.Millisecond), a, reloads, b)
	// Three probes every 2 s: about 13 runs each way. A reload may shift a
	// run across the window's edge, not drop it: allow one per probe.
	if b < 6 {
		t.Fatalf("the control daemon ran only %d times in %s", b, window)
	}
	if a < b-3 {
		t.Fatalf("reloads cost runs: %d with reloads, %d without", a, b)
	}
	if a > b+3 {
		t.Fatalf("reloads added runs: %d with reloads, %d without", a, b)
	}
}
