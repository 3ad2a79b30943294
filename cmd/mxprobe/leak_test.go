package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/statelog"
)

var (
	binOnce sync.Once
	binPath string
)

// mxprobeBin builds the binary once for the tests of this file, with the
// test hooks (the tag mxprobe_testhooks: MXPROBE_TEST_CRASH_AT, which the
// production binary lacks; testhooks.go).
func mxprobeBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		// In the run's state folder, which testenv.Main removes at the
		// end (a folder of /tmp would outlive every run).
		dir, err := os.MkdirTemp(os.Getenv("XDG_STATE_HOME"), "mxprobe-bin-")
		if err != nil {
			t.Fatal(err)
		}
		root, err := testenv.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		binPath = filepath.Join(dir, "mxprobe")
		cmd := exec.Command("go", "build", "-tags", "mxprobe_testhooks", "-o", binPath, "./cmd/mxprobe")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	})
	if binPath == "" {
		t.Fatal("mxprobe binary not built")
	}
	return binPath
}

// leakSetup is one tenant with a bot and a peer of its own on d, and a
// config (round trip every schedule, data_dir) the daemon and the CLI share,
// as an operator running `mxprobe run` next to the daemon would.
type leakSetup struct {
	d                  *testenv.Homeserver
	cfg, dataDir       string
	bot, botPW, peer   string
	peerPW, tenant     string
	botTok, peerTok    string
	probeRoomsSeenByHS func(t *testing.T) []string
}

func newLeakSetup(t *testing.T, schedule string) *leakSetup {
	t.Helper()
	syn := testenv.SharedSynapse(t)
	d := &syn.Homeserver
	s := &leakSetup{d: d, tenant: "acme", dataDir: filepath.Join(t.TempDir(), "data")}
	s.bot, s.botPW = d.User(t, "leak-bot")
	s.peer, s.peerPW = d.User(t, "leak-peer")
	// Dozens of processes log in and run round trips within a minute on
	// purpose: both accounts are exempted from Synapse's limiters keyed by
	// the requester, as operators exempt bots (override_ratelimit; the
	// package's Synapse opens rc_login), and mxprobe's own limit checks
	// are off.
	exempt(t, syn, s.bot, s.peer)
	s.cfg = writeFile(t, "leak.yml", fmt.Sprintf(`global: {homeserver_url: %q, server_name: %q, data_dir: %q, jitter: 0}
synapse_limits: {disabled: true}
tenants:
  - id: acme
    bot: {method: password, user: %s, password: %s}
    peer: {method: password, user: %s, password: %s}
probes:
  - name: roundtrip
    type: roundtrip
    schedule: %q
    timeout: 30s
`, d.URL, d.ServerName, s.dataDir, s.bot, s.botPW, s.peer, s.peerPW, schedule))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	if s.botTok, err = d.Login(ctx, s.bot, s.botPW); err != nil {
		t.Fatal(err)
	}
	if s.peerTok, err = d.Login(ctx, s.peer, s.peerPW); err != nil {
		t.Fatal(err)
	}
	return s
}

// memberships returns, for a token's user, the rooms it is joined to and
// invited to (an initial /sync).
func memberships(t *testing.T, d *testenv.Homeserver, token string) (joined, invited []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A filter of its own each time: Synapse answers an identical /sync
	// from a cache for two minutes.
	filter := fmt.Sprintf(`{"room":{"include_leave":true,"timeline":{"limit":1}},"presence":{"not_types":["*","mxprobe.test.%d"]}}`, time.Now().UnixNano())
	b, err := d.Do(ctx, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+urlQueryEscape(filter), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Rooms struct {
			Join   map[string]json.RawMessage `json:"join"`
			Invite map[string]json.RawMessage `json:"invite"`
			Leave  map[string]json.RawMessage `json:"leave"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	for r := range resp.Rooms.Join {
		joined = append(joined, r)
	}
	for r := range resp.Rooms.Invite {
		invited = append(invited, r)
	}
	return joined, invited
}

// forgot reports whether the token's user forgot room: /messages answers
// 403 then (a room left but not forgotten still answers 200).
func forgot(t *testing.T, d *testenv.Homeserver, token, room string) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := d.Do(ctx, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=1", token, nil)
	// Dendrite says so; Synapse refuses a forgotten room as one the user
	// is not in (a room left but not forgotten still answers 200 on both).
	gone := strings.Contains(string(b), "forgot") ||
		(strings.Contains(string(b), "M_FORBIDDEN") && strings.Contains(string(b), "not in room"))
	return err != nil && gone, fmt.Sprintf("%v %.120s", err, b)
}

// exempt registers an admin on syn and exempts users from Synapse's
// limiters keyed by the requester (override_ratelimit).
func exempt(t *testing.T, syn *testenv.Synapse, users ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, pw := syn.User(t, "leak-admin")
	tok, err := syn.Register(ctx, admin+"-a", pw, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := syn.OverrideRateLimit(ctx, tok, "@"+u+":"+syn.ServerName); err != nil {
			t.Fatalf("exempting %s: %v", u, err)
		}
	}
}

func urlQueryEscape(s string) string {
	r := strings.NewReplacer("{", "%7B", "}", "%7D", `"`, "%22", ":", "%3A", ",", "%2C", "[", "%5B", "]", "%5D", "*", "%2A")
	return r.Replace(s)
}

// assertClean checks on the homeserver that neither account is joined to
// or invited to any room, and that the journal is empty.
func (s *leakSetup) assertClean(t *testing.T) {
	t.Helper()
	for who, tok := range map[string]string{"bot": s.botTok, "peer": s.peerTok} {
		j, i := memberships(t, s.d, tok)
		if len(j)+len(i) > 0 {
			t.Errorf("%s: joined %v, invited %v", who, j, i)
		}
	}
	if left := journalEntries(t, filepath.Join(s.dataDir, "rooms")); len(left) > 0 {
		t.Errorf("journal entries left: %v", left)
	}
}

// journalEntries reads the room journal in dir: the live entries of every
// process's log, and one-file-per-room entries of earlier versions.
func journalEntries(t *testing.T, dir string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	logs, _ := filepath.Glob(filepath.Join(dir, "*.jlog"))
	for _, f := range logs {
		recs, _ := statelog.Read(f, nil)
		for _, v := range recs {
			out = append(out, v)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// runCLIProc runs `mxprobe run roundtrip` as a process and returns its
// result (nil when it was killed) and its exit error.
func (s *leakSetup) runCLIProc(t *testing.T, env ...string) (*probes.Result, error, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mxprobeBin(t), "run", "roundtrip", "--tenant", s.tenant, "-o", "json", "--config.file", s.cfg, "--log.level", "warn")
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var r probes.Result
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		return nil, err, errOut.String()
	}
	return &r, err, errOut.String()
}

func killedBySignal(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Done when 6: `mxprobe run roundtrip` is killed (SIGKILL, by the crash
// hook at an exact point) at each of 12 points of the round trip, and the
// daemon at 8 more; each restart sweeps; after a last run, both accounts
// have no room joined, invited or left without being forgotten, checked
// on the homeserver, and the journal is empty.
func TestKilledRoundtripsLeaveNoRooms(t *testing.T) {
	t.Parallel()
	s := newLeakSetup(t, "@every 2s")
	// The check is not vacuous: a room left but not forgotten is seen as
	// such, a forgotten one as forgotten.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := s.d.Do(ctx, "POST", "/_matrix/client/v3/createRoom", s.peerTok, []byte(`{"preset":"private_chat"}`))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	_ = json.Unmarshal(b, &created)
	if _, err := s.d.Do(ctx, "POST", "/_matrix/client/v3/rooms/"+created.RoomID+"/leave", s.peerTok, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if f, why := forgot(t, s.d, s.peerTok, created.RoomID); f {
		t.Fatalf("a left room counts as forgotten: %s", why)
	}
	if _, err := s.d.Do(ctx, "POST", "/_matrix/client/v3/rooms/"+created.RoomID+"/forget", s.peerTok, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if f, why := forgot(t, s.d, s.peerTok, created.RoomID); !f {
		t.Fatalf("a forgotten room is not seen as forgotten: %s", why)
	}
	s.assertClean(t)

	// Every probe room a crashed run journalled, with the point it crashed at.
	rooms := map[string]string{}
	collect := func(point string) {
		for _, b := range journalEntries(t, filepath.Join(s.dataDir, "rooms")) {
			var e struct {
				RoomID string `json:"room_id"`
			}
			if json.Unmarshal(b, &e) == nil && e.RoomID != "" {
				if _, seen := rooms[e.RoomID]; !seen {
					rooms[e.RoomID] = point
				}
			}
		}
	}

	cliPoints := []string{"journal", "create_room", "invite", "join", "sync", "send", "receive", "power_levels",
		"peer_leave", "bot_leave", "peer_forget", "bot_forget"}
	for _, point := range cliPoints {
		r, err, stderr := s.runCLIProc(t, "MXPROBE_TEST_CRASH_AT="+point)
		if !killedBySignal(err) || r != nil {
			t.Fatalf("run killed at %s: err %v, result %v, stderr %s", point, err, r, stderr)
		}
		collect(point)
	}
	daemonPoints := []string{"journal", "create_room", "invite", "join", "send", "peer_leave", "bot_leave", "peer_forget"}
	for _, point := range daemonPoints {
		cmd := exec.Command(mxprobeBin(t), "serve", "--config.file", s.cfg, "--web.listen-address", "127.0.0.1:0", "--log.level", "warn")
		cmd.Env = append(os.Environ(), "MXPROBE_TEST_CRASH_AT="+point)
		var logBuf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if !killedBySignal(err) {
				t.Fatalf("daemon at %s: %v\n%s", point, err, logBuf.String())
			}
			collect("daemon " + point)
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("daemon never reached %s\n%s", point, logBuf.String())
		}
	}
	// Restart: one more run, whose sweep finishes every crashed run's cleanup.
	r, err, stderr := s.runCLIProc(t)
	if err != nil || r == nil || r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("run after the crashes: %v %+v %s", err, r, stderr)
	}
	var sweepDetail string
	for _, st := range r.Steps {
		if st.Name == "sweep" {
			sweepDetail = st.Detail
		}
	}
	t.Logf("sweep after 20 kills: %q", sweepDetail)
	if r.Counts[probes.CountCleanupFailure] != 0 {
		t.Errorf("cleanup failures: %v", r.Counts)
	}
	s.assertClean(t)
	// The killed processes' logs, finished, are removed; the last run's
	// own log (it exited without a crash) waits for the next sweep.
	if logs, _ := filepath.Glob(filepath.Join(s.dataDir, "rooms", "*.jlog")); len(logs) > 1 {
		t.Errorf("%d journal logs left, want at most the last run's: %v", len(logs), logs)
	}
	// 18 of the 20 kills happened after createRoom answered.
	if len(rooms) < 17 {
		t.Fatalf("only %d journalled rooms seen: %v", len(rooms), rooms)
	}
	for room, point := range rooms {
		if f, why := forgot(t, s.d, s.botTok, room); !f {
			t.Errorf("bot: room of the run killed at %s not forgotten: %s", point, why)
		}
		peerInvited := !strings.HasSuffix(point, "create_room")
		if f, why := forgot(t, s.d, s.peerTok, room); peerInvited && !f {
			t.Errorf("peer: room of the run killed at %s not forgotten: %s", point, why)
		}
	}
	t.Logf("%d journalled rooms, all forgotten by both accounts", len(rooms))
}

// Done when 5: `mxprobe run roundtrip` in a loop next to the daemon (same
// config, same accounts) for 2 minutes: no M_UNKNOWN_TOKEN (no session
// renewal) and no cleanup failure in either.
func TestCLINextToDaemonNoStolenSessions(t *testing.T) {
	t.Parallel()
	s := newLeakSetup(t, "@every 3s")
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	daemon := exec.Command(mxprobeBin(t), "serve", "--config.file", s.cfg, "--web.listen-address", addr, "--log.level", "warn")
	var logBuf testenv.SyncBuffer
	daemon.Stdout, daemon.Stderr = &logBuf, &logBuf
	proc, err := testenv.StartProc(daemon)
	if err != nil {
		t.Fatal(err)
	}
	stop := func() { proc.Stop(syscall.SIGTERM, 20*time.Second) }
	defer stop()

	duration := 2 * time.Minute
	end := time.Now().Add(duration)
	runs := 0
	for time.Now().Before(end) {
		r, err, stderr := s.runCLIProc(t)
		if err != nil || r == nil {
			t.Fatalf("CLI run %d: %v %s", runs, err, stderr)
		}
		if r.Outcome != probes.OutcomeSuccess || r.Counts[probes.CountTokenRefresh] != 0 || r.Counts[probes.CountCleanupFailure] != 0 {
			t.Errorf("CLI run %d: %s %s at %s: %s; counts %v", runs, r.Outcome, r.Class, r.FailedStep, r.Error, r.Counts)
		}
		runs++
	}
	metrics := get(t, "http://"+addr+"/metrics")
	daemonRuns := metricValue(metrics, `mxprobe_probe_runs_total{probe="roundtrip",result="success",tenant="acme"}`)
	for _, bad := range []string{"mxprobe_token_refresh_total{", "mxprobe_cleanup_failures_total{"} {
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, bad) && !strings.HasSuffix(line, " 0") {
				t.Errorf("daemon: %s", line)
			}
		}
	}
	if v := metricValue(metrics, `mxprobe_probe_runs_total{probe="roundtrip",result="failure",tenant="acme"}`); v != "" {
		t.Errorf("daemon: %s failed round trips:\n%s", v, logBuf.String())
	}
	t.Logf("%d CLI runs and %s daemon round trips in %s", runs, daemonRuns, duration)
	if runs < 5 || daemonRuns == "" {
		t.Fatalf("too few runs: CLI %d, daemon %q", runs, daemonRuns)
	}
	stop()
	// Each CLI run removed its devices: of mxprobe's devices only the
	// daemon's remains, for each account.
	for who, tok := range map[string]string{"bot": s.botTok, "peer": s.peerTok} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := s.d.Do(ctx, "GET", "/_matrix/client/v3/devices", tok, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var devs struct {
			Devices []struct {
				DeviceID string `json:"device_id"`
			} `json:"devices"`
		}
		_ = json.Unmarshal(b, &devs)
		n := 0
		for _, d := range devs.Devices {
			if strings.HasPrefix(d.DeviceID, "MXPROBE") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d mxprobe devices after %d CLI runs, want only the daemon's: %s", who, n, runs, b)
		}
	}
	s.assertClean(t)
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func metricValue(metrics, series string) string {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}
