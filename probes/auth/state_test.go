package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

const storedToken = "syt_STORED-access-TOKEN"

func storedSessions(hs string) map[string]*auth.Session {
	return map[string]*auth.Session{"acme/bot": {UserID: "@bot:example.net", DeviceID: "D1", AccessToken: storedToken,
		RefreshToken: "REFRESH-secret", Method: config.MethodPassword, HomeserverURL: hs, LoggedIn: time.Unix(1_800_000_000, 0)}}
}

// Issue 22, done-when 2: the sessions log is written with mode 0600 and
// read back (by a new store: a restart); a corrupted line or a torn last
// one is dropped, a foreign-owned or group/world-readable file, or a
// symlink, is ignored with one log line that never holds its contents,
// and never crashes.
func TestFileStoreSessions(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&logs, nil))
	fs := &auth.FileStore{Dir: dir, Logger: lg}
	if got := fs.LoadSessions(); len(got) != 0 || !strings.Contains(logs.String(), "no stored login state") {
		t.Fatalf("missing file: %v, log %q", got, logs.String())
	}
	if err := fs.SaveSessions(storedSessions("https://hs.example")); err != nil {
		t.Fatal(err)
	}
	other := storedSessions("https://hs.example")["acme/bot"]
	other.AccessToken = "syt_OTHER-secret"
	if err := fs.SaveSession("beta/bot", other); err != nil {
		t.Fatal(err)
	}
	if err := fs.SaveSession("gamma/bot", other); err != nil {
		t.Fatal(err)
	}
	if err := fs.DeleteSession("gamma/bot"); err != nil {
		t.Fatal(err)
	}
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, auth.SessionsFile)
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sessions file: %v mode %v, want 0600", err, fi)
	}
	got := (&auth.FileStore{Dir: dir}).LoadSessions()
	if s := got["acme/bot"]; len(got) != 2 || s == nil || s.AccessToken != storedToken || s.RefreshToken != "REFRESH-secret" ||
		s.HomeserverURL != "https://hs.example" || s.Method != config.MethodPassword || !s.LoggedIn.Equal(time.Unix(1_800_000_000, 0)) ||
		got["beta/bot"] == nil || got["beta/bot"].AccessToken != "syt_OTHER-secret" {
		t.Fatalf("read back: %+v", got)
	}
	good, _ := os.ReadFile(p)
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}

	cases := map[string]struct {
		prepare func(t *testing.T)
		reason  string
		keep    int // sessions still read
	}{
		"corrupted": {func(t *testing.T) {
			writeMode(t, p, append([]byte(`{"k":"x","v":{"access_token":'secret'}}`+"\n"), good...), 0o600)
		}, "damaged_lines=1", 2},
		"truncated": {func(t *testing.T) { writeMode(t, p, good[:len(good)-10], 0o600) }, "torn_last_line=true", 3}, // the torn delete of gamma is lost
		"0644":      {func(t *testing.T) { writeMode(t, p, good, 0o644) }, "mode must be 0600", 0},
		"0660":      {func(t *testing.T) { writeMode(t, p, good, 0o660) }, "mode must be 0600", 0},
		"symlink": {func(t *testing.T) {
			other := filepath.Join(t.TempDir(), "elsewhere")
			writeMode(t, other, good, 0o600)
			_ = os.Remove(p)
			if err := os.Symlink(other, p); err != nil {
				t.Fatal(err)
			}
		}, "cannot open it", 0},
		"foreign": {func(t *testing.T) {
			writeMode(t, p, good, 0o600)
			if os.Getuid() != 0 {
				t.Skip("making a file of another user needs root")
			}
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by another user", 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_ = os.Remove(p)
			c.prepare(t)
			logs.Reset()
			fs := &auth.FileStore{Dir: dir, Logger: lg}
			defer fs.Close()
			if got := fs.LoadSessions(); len(got) != c.keep {
				t.Fatalf("%s file: %d sessions read, want %d", name, len(got), c.keep)
			}
			out := logs.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, c.reason) || !strings.Contains(out, p) {
				t.Errorf("want one log line naming the file and %q, got %q", c.reason, out)
			}
			if strings.Contains(out, "STORED") || strings.Contains(out, "secret") {
				t.Errorf("the log shows the file's contents: %q", out)
			}
			// The file is ours again, 0600, and holds what was read.
			if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("not replaced: %v %v", err, fi)
			}
		})
	}
}

// An upgraded daemon keeps the sessions of the former sessions.json
// (rewritten whole at each login): taken over into the log at the first
// start, the file removed; a corrupted one is ignored with one log line.
func TestFileStoreLegacySessions(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, auth.LegacySessionsFile)
	old := storedSessions("https://hs.example")
	sf := map[string]any{"version": 1, "sessions": map[string]any{"acme/bot": map[string]any{
		"user_id": old["acme/bot"].UserID, "device_id": "D1", "access_token": storedToken, "refresh_token": "REFRESH-secret",
		"method": config.MethodPassword, "homeserver_url": "https://hs.example", "logged_in": "2027-01-15T08:00:00Z"}}}
	b, _ := json.Marshal(sf)
	writeMode(t, legacy, b, 0o600)
	var logs bytes.Buffer
	fs := &auth.FileStore{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	got := fs.LoadSessions()
	if s := got["acme/bot"]; s == nil || s.AccessToken != storedToken || s.RefreshToken != "REFRESH-secret" {
		t.Fatalf("legacy sessions: %+v", got)
	}
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Fatalf("legacy file kept: %v", err)
	}
	if !strings.Contains(logs.String(), "taken over") || strings.Contains(logs.String(), "secret") {
		t.Fatalf("log: %q", logs.String())
	}
	// Then the new format: a login appends, a restart reads both.
	newer := *got["acme/bot"]
	newer.AccessToken = "syt_NEWER"
	if err := fs.SaveSession("acme/bot", &newer); err != nil {
		t.Fatal(err)
	}
	fs.Close()
	if s := (&auth.FileStore{Dir: dir}).LoadSessions()["acme/bot"]; s == nil || s.AccessToken != "syt_NEWER" {
		t.Fatalf("after the restart: %+v", s)
	}

	// A corrupted legacy file.
	dir = t.TempDir()
	legacy = filepath.Join(dir, auth.LegacySessionsFile)
	writeMode(t, legacy, b[:len(b)/2], 0o600)
	logs.Reset()
	fs = &auth.FileStore{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	defer fs.Close()
	if got := fs.LoadSessions(); len(got) != 0 {
		t.Fatalf("truncated legacy file used: %v", got)
	}
	if out := logs.String(); strings.Count(out, "\n") != 1 || !strings.Contains(out, "not a sessions file") || !strings.Contains(out, legacy) {
		t.Fatalf("log: %q", out)
	}
}

func writeMode(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	_ = os.Remove(p)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// whoamiServer answers whoami for one token (401 otherwise) and counts
// whoami requests.
func whoamiServer(t *testing.T, token string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		n.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}`))
			return
		}
		_, _ = w.Write([]byte(`{"user_id":"@bot:example.net","device_id":"D1"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// A restored session is proven by whoami before its first use and then
// used without a login; a refused one is dropped and replaced by a full
// login; one made for another homeserver or by another method is not used.
func TestRestoredSessionsProvenBeforeUse(t *testing.T) {
	srv, whoamis := whoamiServer(t, storedToken)
	acct := auth.Account{Key: "acme/bot", Tenant: "acme", Role: "bot", HomeserverURL: srv.URL, ServerName: "example.net",
		Config: config.Account{Method: config.MethodPassword, User: "bot", Password: "pw"}, Password: "pw"}
	newManager := func(stored map[string]*auth.Session) (*auth.Manager, *countingMethod, *auth.FileStore) {
		fs := &auth.FileStore{Dir: t.TempDir()}
		if err := fs.SaveSessions(stored); err != nil {
			t.Fatal(err)
		}
		m := auth.NewManager(srv.Client())
		m.Store = fs
		meth := &countingMethod{hs: srv.URL}
		m.Register(config.MethodPassword, meth)
		if n := m.Restore(); n != len(stored) {
			t.Fatalf("restored %d of %d", n, len(stored))
		}
		return m, meth, fs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	m, meth, _ := newManager(storedSessions(srv.URL))
	for i := 0; i < 2; i++ {
		rec := probes.NewRecorder("roundtrip", "roundtrip", "acme")
		sess, err := m.Session(ctx, acct, rec)
		res := rec.Finish()
		if err != nil || sess.AccessToken != storedToken || meth.logins != 0 {
			t.Fatalf("use %d: %v, %d logins, steps %v", i, err, meth.logins, res.Steps)
		}
		if proven := hasStep(res, auth.StepSessionResume); proven != (i == 0) {
			t.Fatalf("use %d: session_resume step %v, want only before the first use", i, proven)
		}
	}
	if whoamis.Load() != 1 {
		t.Fatalf("%d whoami requests, want 1", whoamis.Load())
	}

	refused := storedSessions(srv.URL)
	refused["acme/bot"].AccessToken = "syt_revoked"
	m, meth, fs := newManager(refused)
	rec := probes.NewRecorder("roundtrip", "roundtrip", "acme")
	sess, err := m.Session(ctx, acct, rec)
	res := rec.Finish()
	if err != nil || meth.logins != 1 || sess.AccessToken == "syt_revoked" || !res.OK() {
		t.Fatalf("refused stored session: %v, %d logins, %+v", err, meth.logins, res)
	}
	if s := fs.LoadSessions()["acme/bot"]; s == nil || s.AccessToken != sess.AccessToken {
		t.Fatalf("the new session was not stored: %v", s)
	}

	for name, change := range map[string]func(s *auth.Session){
		"homeserver": func(s *auth.Session) { s.HomeserverURL = "https://other.example" },
		"method":     func(s *auth.Session) { s.Method = config.MethodMASCompatPassword },
	} {
		other := storedSessions(srv.URL)
		change(other["acme/bot"])
		m, meth, _ := newManager(other)
		if _, err := m.Session(ctx, acct, probes.NewRecorder("", "", "")); err != nil || meth.logins != 1 {
			t.Errorf("another %s: %v, %d logins, want the stored session dropped", name, err, meth.logins)
		}
	}
}

// Budgets keep their spend in the store: a restarted budget refuses what
// the window has not refilled, and forgets logins older than the window.
func TestBudgetSpendSurvivesRestart(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	fs := &auth.FileStore{Dir: t.TempDir()}
	b := &auth.Budget{Name: "rc_login.address", Max: 5, Window: 1665 * time.Second, Now: clk.Now, Store: fs, Key: "password"}
	b.Restore()
	for i := 0; i < 5; i++ {
		if ok, _ := b.Take(); !ok {
			t.Fatalf("login %d refused", i)
		}
		clk.Add(10 * time.Second)
	}
	fi, err := os.Stat(filepath.Join(fs.Dir, auth.BudgetsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("budgets file: %v %v", err, fi)
	}
	// A new process, a new store on the same directory.
	b2 := &auth.Budget{Name: "rc_login.address", Max: 5, Window: 1665 * time.Second, Now: clk.Now,
		Store: &auth.FileStore{Dir: fs.Dir}, Key: "password"}
	b2.Restore()
	if ok, wait := b2.Take(); ok || wait != 1665*time.Second-50*time.Second {
		t.Fatalf("restarted budget: ok=%v wait %s, want refused until the first login leaves the window", ok, wait)
	}
	other := &auth.Budget{Max: 5, Window: time.Minute, Now: clk.Now, Store: &auth.FileStore{Dir: fs.Dir}, Key: "mas"}
	other.Restore()
	if ok, _ := other.Take(); !ok {
		t.Fatal("another budget's spend counted")
	}
	clk.Add(1665 * time.Second)
	b3 := &auth.Budget{Max: 5, Window: 1665 * time.Second, Now: clk.Now, Store: &auth.FileStore{Dir: fs.Dir}, Key: "password"}
	b3.Restore()
	if ok, _ := b3.Take(); !ok {
		t.Fatal("logins older than the window still counted")
	}
}

// A login waits for the budget's next slot when it comes before the run's
// deadline, accounts without a session first, then the longest waiting;
// it is refused (with the time to its slot) when the slot comes too late.
func TestBudgetWaitForSlot(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	b := &auth.Budget{Name: "mas", Max: 4, Window: time.Minute, MinGap: 15 * time.Second, Now: clk.Now, After: clk.After}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if waited, ok, _ := b.Wait(ctx, "a", true); !ok || waited != 0 {
		t.Fatalf("free slot: ok=%v waited %s", ok, waited)
	}
	clk.Add(5 * time.Second)
	if waited, ok, _ := b.Wait(ctx, "b", true); !ok || waited != 10*time.Second {
		t.Fatalf("slot 10 s away, 30 s run: ok=%v waited %s, want 10s", ok, waited)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel2()
	// 12 s run: the slot in 15 s comes after the deadline (less the login's reserve).
	if waited, ok, next := b.Wait(short, "c", true); ok || waited != 0 || next != 15*time.Second {
		t.Fatalf("slot after the deadline: ok=%v waited %s next %s", ok, waited, next)
	}
	if _, ok, _ := b.Wait(context.Background(), "c", true); ok {
		t.Fatal("no deadline: waited")
	}
}

// The order of waiters: first logins before re-logins, then by arrival.
func TestBudgetWaitOrder(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	// The waiters look at the budget's (fake) clock again every few
	// milliseconds of real time, whatever wait they asked for: who gets a
	// slot is decided by the queue's order, not by who wakes first, and a
	// waiter that read the clock just before the test moved it still sees
	// the move (a timer released once could miss it and wait forever).
	b := &auth.Budget{Name: "test", Max: 1, Window: time.Minute, Now: clk.Now,
		After: func(time.Duration) <-chan time.Time { return time.After(5 * time.Millisecond) }}
	if ok, _ := b.Take(); !ok {
		t.Fatal("first take")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	got := make(chan string, 3)
	start := func(key string, first bool) {
		go func() {
			if _, ok, _ := b.Wait(ctx, key, first); ok {
				got <- key
			} else {
				got <- key + " refused"
			}
		}()
	}
	start("relogin", false)
	waitQueue(t, b, 1)
	clk.Add(time.Second)
	start("first-a", true)
	waitQueue(t, b, 2)
	clk.Add(time.Second)
	start("first-b", true)
	waitQueue(t, b, 3)
	if b.Available() {
		t.Fatal("Available while accounts wait")
	}
	var order []string
	for i := 0; i < 3; i++ {
		clk.Add(time.Minute) // one slot more: the head takes it, the others wait on
		order = append(order, <-got)
	}
	if strings.Join(order, ",") != "first-a,first-b,relogin" {
		t.Fatalf("order %v, want first logins by arrival, then the re-login", order)
	}
}

// waitQueue waits until n accounts are queued at b (a sync point, not a
// sleep: the waiters park on the budget's timer).
func waitQueue(t *testing.T, b *auth.Budget, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.Queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d accounts queued, want %d", b.Queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Issue 22, done-when 3: a daemon that spent its login budget (five
// tenants' first logins behind Synapse's default rc_login.address) and was
// restarted at once without its sessions sends its next full login only
// when the remembered window allows, and meets no 429; a budget that
// forgot its spend would have met one at once. The limiter and the budgets
// share one clock.
func TestRestartedBudgetWaitsForTheWindow(t *testing.T) {
	d := &testenv.SharedDendrite(t).Homeserver
	t0 := time.Now().Truncate(time.Millisecond) // the store keeps milliseconds
	clk := &fakeClock{t: t0}
	lim := testenv.Limited(t, d, synlimit.Options{Pause: -1, Now: clk.Now})
	var cfg config.Config
	for i := 0; i < 6; i++ {
		user, pw := d.User(t, fmt.Sprintf("budget%d", i))
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: fmt.Sprintf("t%d", i), HomeserverURL: lim.URL, ServerName: d.ServerName,
			Bot: config.Account{Method: config.MethodPassword, User: user, Password: promcfg.Secret(pw)}})
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	dir := t.TempDir()
	start := func(remember bool) *auth.LoginProbe {
		b := &auth.Budget{Name: "rc_login.address", Max: 5, Window: 1665 * time.Second, Now: clk.Now, After: clk.After, Key: "password"}
		if remember {
			b.Store = &auth.FileStore{Dir: dir}
			b.Restore()
		}
		m := auth.NewManager(httpc)
		m.Now = clk.Now
		m.Instance = "d-" + auth.RandomID()
		m.SetBudget(b, config.MethodPassword)
		return &auth.LoginProbe{Name: "login", Manager: m, Tenants: cfg.TenantMap(nil), FullLoginInterval: time.Hour}
	}
	run := func(p *auth.LoginProbe, tenant string) probes.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return p.Run(ctx, tenant)
	}
	first := start(true)
	for i := 0; i < 5; i++ {
		requireOK(t, run(first, fmt.Sprintf("t%d", i)))
		clk.Add(time.Second)
	}
	// Restarted at once (its sessions lost): t5 needs a full login.
	again := start(true)
	for i := 0; i < 3; i++ {
		if r := run(again, "t5"); r.Outcome != probes.OutcomeSkipped || r.Class != probes.ClassLoginBudget {
			t.Fatalf("restarted, %d min later: %s %s: %s", i*5, r.Outcome, r.Class, r.Error)
		}
		clk.Add(5 * time.Minute)
	}
	testenv.NoRefusals(t, lim)
	// The first login leaves Synapse's window (5 per 1665 s): t5's next
	// run waits the remaining seconds for its slot and logs in.
	clk.AdvanceTo(t0.Add(1665*time.Second - 10*time.Second))
	r := run(again, "t5")
	requireOK(t, r)
	if d, ok := r.StepDuration(auth.StepLoginBudgetWait); !ok || d != 10*time.Second {
		t.Fatalf("t5 waited %s (step %v), want the 10 s to its slot; steps %v", d, ok, stepNames(r))
	}
	testenv.NoRefusals(t, lim)

	// The same restart with a budget that forgot its spend is refused by
	// the homeserver (what the stored spend prevents).
	for i := 0; i < 5; i++ {
		requireOK(t, run(first, fmt.Sprintf("t%d", i))) // sessions held: no login
	}
	forgot := start(false)
	for i := 0; i < 6; i++ {
		run(forgot, fmt.Sprintf("t%d", i))
	}
	if len(lim.Refusals()) == 0 {
		t.Fatal("a budget without memory met no 429: the test cannot tell")
	}
}

// A data_dir that cannot be written is said once per failed save, naming
// the file and never a token.
func TestFileStoreUnwritableIsLogged(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	fs := &auth.FileStore{Dir: filepath.Join(blocker, "data"), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := fs.SaveSessions(storedSessions("https://hs.example")); err == nil {
		t.Fatal("saved into a path below a file")
	}
	if !strings.Contains(logs.String(), "state not saved") || !strings.Contains(logs.String(), auth.SessionsFile) ||
		strings.Contains(logs.String(), storedToken) {
		t.Fatalf("log: %q", logs.String())
	}
}
