package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Standin is internal/tools/standin running in a process of its own: a
// homeserver stand-in with bot accounts bot000000.. (password
// pw-<localpart>) and a peer (peer / peer-pw), one listener per replica,
// recording which listener each probe run came through.
type Standin struct {
	// URLs are the client-server API base URLs, one per listener.
	URLs    []string
	control string
	proc    *Proc
}

// StandinRun is one probe run the stand-in attributed.
type StandinRun struct {
	Listener int
	User     string // localpart
	Kind     string // whoami or login_refused
	At       time.Time
}

// BuildTool builds a command of the module (a path such as
// ./internal/tools/standin) without the race detector into a temporary
// folder of the test and returns the binary's path.
func BuildTool(t testing.TB, pkg string) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// StartStandin runs the stand-in with users bot accounts and listeners
// listeners until the test ends.
func StartStandin(t testing.TB, users, listeners int, args ...string) *Standin {
	t.Helper()
	bin := BuildTool(t, "./internal/tools/standin")
	cmd := exec.Command(bin, append([]string{"--users", strconv.Itoa(users), "--listeners", strconv.Itoa(listeners)}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p, log := StartForTest(t, "standin", cmd)
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		first <- line
		_, _ = io.Copy(io.Discard, out)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(60 * time.Second):
		t.Fatalf("standin did not start in 60s:\n%s", log.String())
	}
	var hello struct {
		URLs    []string `json:"urls"`
		Control string   `json:"control"`
	}
	if err := json.Unmarshal([]byte(line), &hello); err != nil || len(hello.URLs) != listeners {
		t.Fatalf("standin said %q (%v):\n%s", line, err, log.String())
	}
	return &Standin{URLs: hello.URLs, control: hello.Control, proc: p}
}

// Runs returns the runs recorded since the previous call.
func (s *Standin) Runs(t testing.TB) []StandinRun {
	t.Helper()
	body := s.get(t, "/runs")
	var out []StandinRun
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			continue
		}
		li, _ := strconv.Atoi(f[0])
		ms, _ := strconv.ParseInt(f[3], 10, 64)
		out = append(out, StandinRun{Listener: li, User: f[1], Kind: f[2], At: time.UnixMilli(ms)})
	}
	return out
}

// StandinStats is what the stand-in reports about itself.
type StandinStats struct {
	Requests   map[string]int `json:"requests"`
	PeerRooms  int            `json:"peer_rooms"`
	Runs       int            `json:"runs"`
	CPUSeconds float64        `json:"cpu_seconds"`
	RSSBytes   int64          `json:"rss_bytes"`
}

// Stats returns the stand-in's request counts, rooms left and own usage.
func (s *Standin) Stats(t testing.TB) StandinStats {
	t.Helper()
	var st StandinStats
	if err := json.Unmarshal(s.get(t, "/stats"), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (s *Standin) get(t testing.TB, path string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.control+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("standin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("standin %s: %d %v", path, resp.StatusCode, err)
	}
	return b
}

// StandinUser is the localpart of the stand-in's i-th bot.
func StandinUser(i int) string { return fmt.Sprintf("bot%06d", i) }
