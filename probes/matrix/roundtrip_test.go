package matrix

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"
	"go.uber.org/goleak"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/faultproxy"
	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fixture is a tenant set-up on a homeserver (Synapse, Dendrite, or a
// proxy in front of one).
type fixture struct {
	d       *testenv.Homeserver
	cfg     *config.Config
	manager *auth.Manager
	probe   *RoundtripProbe
	// users and passwords by tenant id; peer under "peer".
	pw map[string]string
	us map[string]string
}

// newFixture registers one bot per tenant and a shared peer on d, with
// hsURL as the homeserver URL the probe uses (d.URL or a proxy).
func newFixture(t *testing.T, d *testenv.Homeserver, hsURL string, tenants ...string) *fixture {
	t.Helper()
	f := &fixture{d: d, pw: map[string]string{}, us: map[string]string{}}
	peerUser, peerPW := d.User(t, "peer")
	f.us["peer"], f.pw["peer"] = peerUser, peerPW
	cfg := &config.Config{Global: config.Global{HomeserverURL: hsURL, ServerName: d.ServerName}}
	for _, id := range tenants {
		u, pw := d.User(t, "bot-"+id)
		f.us[id], f.pw[id] = u, pw
		cfg.Tenants = append(cfg.Tenants, config.Tenant{
			ID: id, HomeserverURL: hsURL, ServerName: d.ServerName,
			Bot: config.Account{Method: config.MethodPassword, User: u, Password: promcfg.Secret(pw)},
		})
	}
	minPL := 50
	settings := &RoundtripSettings{
		Peer:           &config.Account{Method: config.MethodPassword, User: peerUser, Password: promcfg.Secret(peerPW)},
		MinPowerLevel:  &minPL,
		RoomNamePrefix: DefaultRoomNamePrefix,
		SyncTimeout:    config.Duration(5 * time.Second),
		CleanupTimeout: config.Duration(10 * time.Second),
		SweepMaxAge:    config.Duration(time.Hour),
		SweepInterval:  config.Duration(time.Hour),
	}
	f.cfg = cfg
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	f.manager = auth.NewManager(httpc)
	f.probe = &RoundtripProbe{Name: "roundtrip", Manager: f.manager, Tenants: cfg.TenantMap(nil), Settings: settings}
	return f
}

// closeIdle closes the keep-alive connections of the probe's client and of
// the harness (default transport), so goleak sees only what the probe left.
func (f *fixture) closeIdle() {
	f.manager.HTTP.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
}

func (f *fixture) run(t *testing.T, tenant string, timeout time.Duration) probes.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r := f.probe.Run(ctx, tenant)
	// Every real run reports only the steps and classes the type declares.
	if err := probetype.CheckResult(RoundtripType(), r); err != nil {
		t.Error(err)
	}
	return r
}

func (f *fixture) token(t *testing.T, who string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := f.d.Login(ctx, f.us[who], f.pw[who])
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func joined(t *testing.T, d *testenv.Homeserver, token string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rooms, err := d.JoinedRooms(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(rooms)
	return rooms
}

func mustOK(t *testing.T, r probes.Result) {
	t.Helper()
	if r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("run %s/%s: %s %s at %s: %s\nsteps: %+v", r.Probe, r.Tenant, r.Outcome, r.Class, r.FailedStep, r.Error, r.Steps)
	}
}

func stepNames(r probes.Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

// Done when 1: full round trip for two tenants; every step has a positive
// duration and their sum is within 5% of the run's duration.
//
// On Synapse itself (its own default limits), and on Dendrite behind the
// Synapse limiter model with its defaults (a second implementation).
func TestRoundtripTwoTenants(t *testing.T) {
	t.Run("synapse", func(t *testing.T) {
		s := testenv.SharedSynapse(t)
		roundtripTwoTenants(t, newFixture(t, &s.Homeserver, s.URL, "acme", "globex"))
	})
	t.Run("dendrite", func(t *testing.T) {
		d := &testenv.SharedDendrite(t).Homeserver
		lim := testenv.Limited(t, d, synlimit.Options{Pause: -1}) // Synapse's defaults
		defer testenv.NoRefusals(t, lim)
		roundtripTwoTenants(t, newFixture(t, d, lim.URL, "acme", "globex"))
	})
}

func roundtripTwoTenants(t *testing.T, f *fixture) {
	d := f.d
	for _, tenant := range []string{"acme", "globex"} {
		// The first run logs in and sweeps; the second is a steady-state run.
		for i := 0; i < 2; i++ {
			r := f.run(t, tenant, 30*time.Second)
			mustOK(t, r)
			names := stepNames(r)
			for _, want := range []string{"create_room", "invite", "join", "sync", "send", "receive", "power_levels", "leave", "forget"} {
				if !slices.Contains(names, want) {
					t.Fatalf("run %d of %s: step %s missing: %v", i, tenant, want, names)
				}
			}
			if i == 0 && (!slices.Contains(names, "login") || !slices.Contains(names, "sweep")) {
				t.Fatalf("first run: want login and sweep steps: %v", names)
			}
			// The shared peer logs in once, for the first tenant, and its
			// session serves the others.
			if wantPeerLogin := i == 0 && tenant == "acme"; slices.Contains(names, "peer_login") != wantPeerLogin {
				t.Fatalf("run %d of %s: peer_login step present = %v: %v", i, tenant, !wantPeerLogin, names)
			}
			var sum time.Duration
			for _, s := range r.Steps {
				if s.Duration <= 0 || !s.OK {
					t.Fatalf("step %s: duration %s ok %v", s.Name, s.Duration, s.OK)
				}
				sum += s.Duration
			}
			if diff := r.Duration - sum; diff < 0 || float64(diff) > 0.05*float64(r.Duration) {
				t.Fatalf("steps sum to %s, run took %s (over 5%% apart)", sum, r.Duration)
			}
			if v, ok := r.Signals[probes.SignalDeliverySeconds]; !ok || v <= 0 || v > 30 {
				t.Fatalf("delivery signal %v %v", v, ok)
			}
			t.Logf("%s run %d: %s, delivery %.1fms, steps %v", tenant, i, r.Duration, r.Signals[probes.SignalDeliverySeconds]*1000, names)
		}
	}
	for _, who := range []string{"acme", "globex", "peer"} {
		if rooms := joined(t, d, f.token(t, who)); len(rooms) != 0 {
			t.Fatalf("%s still in rooms %v", who, rooms)
		}
	}
}

// Done when 2a: 200 round trips back to back leave the bot's and the peer's
// joined rooms as they were.
func TestRoundtripRepeatedLeavesNothing(t *testing.T) {
	d := &testenv.SharedDendrite(t).Homeserver
	f := newFixture(t, d, d.URL, "loop")
	botTok, peerTok := f.token(t, "loop"), f.token(t, "peer")
	// Each account is in one room of its own that must stay.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tok := range []string{botTok, peerTok} {
		if _, err := d.Do(ctx, "POST", "/_matrix/client/v3/createRoom", tok, []byte(`{"preset":"private_chat","name":"keep me"}`)); err != nil {
			t.Fatal(err)
		}
	}
	botBefore, peerBefore := joined(t, d, botTok), joined(t, d, peerTok)
	n := 200
	start := time.Now()
	for i := 0; i < n; i++ {
		r := f.run(t, "loop", 30*time.Second)
		mustOK(t, r)
	}
	t.Logf("%d round trips in %s", n, time.Since(start))
	botAfter, peerAfter := joined(t, d, botTok), joined(t, d, peerTok)
	if !slices.Equal(botBefore, botAfter) || !slices.Equal(peerBefore, peerAfter) {
		t.Fatalf("joined rooms changed: bot %v → %v, peer %v → %v", botBefore, botAfter, peerBefore, peerAfter)
	}
	if len(botBefore) != 1 || len(peerBefore) != 1 {
		t.Fatalf("expected one room each before: %v %v", botBefore, peerBefore)
	}
}

// Done when 2b: a run cancelled right after the invite; the next sweep leaves
// no probe room behind (also for a run that "crashed" without cleanup).
func TestCancelAfterInviteThenSweep(t *testing.T) {
	defer goleak.VerifyNone(t, testenv.LeakOptions()...)
	d := &testenv.SharedSynapse(t).Homeserver
	f := newFixture(t, d, d.URL, "cancel")
	defer f.closeIdle()
	botTok, peerTok := f.token(t, "cancel"), f.token(t, "peer")

	for _, crash := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		f.probe.afterStep = func(step string) {
			if step == "invite" {
				cancel()
			}
		}
		f.probe.crash = crash
		r := f.probe.Run(ctx, "cancel")
		cancel()
		f.probe.afterStep, f.probe.crash = nil, false
		if r.OK() || r.FailedStep != "join" || r.Class != probes.ClassCancelled {
			t.Fatalf("crash=%v: want a run cancelled at join, got %s %s at %s: %s", crash, r.Outcome, r.Class, r.FailedStep, r.Error)
		}
		names := stepNames(r)
		if crash == slices.Contains(names, "leave") {
			t.Fatalf("crash=%v: cleanup steps %v", crash, names)
		}
		if !crash {
			for _, s := range r.Steps {
				if (s.Name == "leave" || s.Name == "forget") && !s.OK {
					t.Fatalf("cleanup after cancel failed: %+v", s)
				}
			}
			if len(joined(t, d, botTok)) != 0 {
				t.Fatal("cleanup after cancel left the bot in the room")
			}
		}
	}
	// The crashed run left its room (bot joined, peer invited).
	if len(joined(t, d, botTok)) != 1 {
		t.Fatalf("crash should have left one room: %v", joined(t, d, botTok))
	}
	if n := len(invites(t, d, peerTok)); n != 1 {
		t.Fatalf("crash should have left one invitation, got %d", n)
	}
	// A sweep with a max age above the room's age keeps it ...
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := f.probe.Sweep(ctx, "cancel")
	mustOK(t, r)
	if len(joined(t, d, botTok)) != 1 {
		t.Fatal("sweep removed a room younger than sweep_max_age")
	}
	// ... and one with a short max age removes it on both sides.
	f.probe.Settings.SweepMaxAge = config.Duration(time.Millisecond)
	r = f.probe.Sweep(ctx, "cancel")
	mustOK(t, r)
	if rooms := joined(t, d, botTok); len(rooms) != 0 {
		t.Fatalf("after the sweep the bot is still in %v", rooms)
	}
	if rooms := joined(t, d, peerTok); len(rooms) != 0 {
		t.Fatalf("after the sweep the peer is still in %v", rooms)
	}
	if inv := invites(t, d, peerTok); len(inv) != 0 {
		t.Fatalf("after the sweep the peer still has invitations %v", inv)
	}
	if r.Steps[len(r.Steps)-1].Detail == "" {
		t.Fatalf("sweep step should say what it left: %+v", r.Steps)
	}
}

func invites(t *testing.T, d *testenv.Homeserver, token string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Fresh, past Synapse's two-minute /sync cache (freshFilter).
	filter := freshFilter(`{"room":{"timeline":{"limit":0}}}`)
	b, err := d.Do(ctx, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(filter), token, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	// A light parse: room ids under rooms.invite.
	var resp struct {
		Rooms struct {
			Invite map[string]any `json:"invite"`
		} `json:"rooms"`
	}
	if err := jsonUnmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	for id := range resp.Rooms.Invite {
		out = append(out, id)
	}
	return out
}

// Done when 3: the bot's token is logged out between runs; the next run
// logs in again, succeeds, and the refresh is counted.
func TestUnknownTokenRelogin(t *testing.T) {
	d := &testenv.SharedSynapse(t).Homeserver
	f := newFixture(t, d, d.URL, "relog")
	mustOK(t, f.run(t, "relog", 30*time.Second))
	sess := f.manager.Cached("relog/bot")
	if sess == nil {
		t.Fatal("no cached bot session")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Logout(ctx, sess.AccessToken); err != nil {
		t.Fatal(err)
	}
	r := f.run(t, "relog", 30*time.Second)
	mustOK(t, r)
	if r.Counts[probes.CountTokenRefresh] != 1 {
		t.Fatalf("token refreshes counted: %v", r.Counts)
	}
	if !slices.Contains(stepNames(r), "login") {
		t.Fatalf("the re-login should be a step: %v", stepNames(r))
	}
	if now := f.manager.Cached("relog/bot"); now == nil || now.AccessToken == sess.AccessToken {
		t.Fatal("the session was not replaced")
	}
	// The steps still add up with the re-login in the middle.
	var sum time.Duration
	for _, s := range r.Steps {
		sum += s.Duration
	}
	if diff := r.Duration - sum; diff < 0 || float64(diff) > 0.05*float64(r.Duration) {
		t.Fatalf("steps sum to %s, run took %s", sum, r.Duration)
	}
}

// Done when 4: 429 with retry_after_ms=300 on send waits, then succeeds and
// is counted; beyond the deadline the run ends as rate_limited (a warning),
// with no goroutine left behind.
func TestRateLimitedSend(t *testing.T) {
	defer goleak.VerifyNone(t, testenv.LeakOptions()...)
	d := &testenv.SharedDendrite(t).Homeserver
	proxy, err := faultproxy.New(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	f := newFixture(t, d, proxy.URL, "rl")
	defer f.closeIdle()
	mustOK(t, f.run(t, "rl", 30*time.Second)) // log in, sweep

	h := proxy.Add(faultproxy.Rule{Method: "PUT", Path: "/send/", Times: 1, Fault: faultproxy.RateLimited(300 * time.Millisecond)})
	r := f.run(t, "rl", 30*time.Second)
	mustOK(t, r)
	send, _ := r.StepDuration("send")
	if h.Hits() != 1 || r.Counts[RateLimitedCount("send")] != 1 {
		t.Fatalf("hits %d counts %v", h.Hits(), r.Counts)
	}
	if send < 300*time.Millisecond || send > 10*time.Second {
		t.Fatalf("send took %s, want at least the 300ms asked for", send)
	}
	h.Remove()

	h = proxy.Add(faultproxy.Rule{Method: "PUT", Path: "/send/", Fault: faultproxy.RateLimited(10 * time.Minute)})
	r = f.run(t, "rl", 20*time.Second)
	if r.Outcome != probes.OutcomeWarning || r.Class != probes.ClassRateLimited || r.FailedStep != "send" {
		t.Fatalf("want a rate_limited warning at send, got %s %s at %s: %s", r.Outcome, r.Class, r.FailedStep, r.Error)
	}
	if r.Counts[RateLimitedCount("send")] != 1 || r.Duration > 10*time.Second {
		t.Fatalf("counts %v duration %s (must not wait out the limit)", r.Counts, r.Duration)
	}
	// The run says which limiter and what to change.
	if !strings.Contains(r.Error, "retry_after_ms 600000") || !strings.Contains(r.Error, "rc_message") || !strings.Contains(r.Error, "exempt") {
		t.Fatalf("run error %q: want the retry_after_ms, the likely limiter and the fix", r.Error)
	}
	if !slices.Contains(stepNames(r), "forget") {
		t.Fatalf("cleanup must run after a rate-limited run: %v", stepNames(r))
	}
	h.Remove()
}

// Done when 5: the proxy adds 50 ms to send; every delayed send step is at
// least 50 ms, and the delayed median stays within 50 ms + slack of the
// undelayed one, which catches a step that counts more than its request (a
// retry, a re-login, the sync after it). The slack is wide because the two
// medians come from separate runs against a real homeserver on a shared
// machine; the fine figure (about 51 ms on a quiet machine, see
// docs/bench.md) is logged, and overhead targets live in the benchmarks.
func TestSendDelayMeasured(t *testing.T) {
	d := &testenv.SharedDendrite(t).Homeserver
	proxy, err := faultproxy.New(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	f := newFixture(t, d, proxy.URL, "delay")
	mustOK(t, f.run(t, "delay", 30*time.Second))
	const runs = 5
	measure := func() (time.Duration, []time.Duration) {
		var all []time.Duration
		for i := 0; i < runs; i++ {
			r := f.run(t, "delay", 30*time.Second)
			mustOK(t, r)
			s, _ := r.StepDuration("send")
			all = append(all, s)
		}
		sorted := slices.Clone(all)
		slices.Sort(sorted)
		return sorted[runs/2], all
	}
	base, baseAll := measure()
	h := proxy.Add(faultproxy.Rule{Method: "PUT", Path: "/send/", Fault: faultproxy.Fault{Delay: 50 * time.Millisecond}})
	delayed, delayedAll := measure()
	if h.Hits() != runs {
		t.Fatalf("rule applied %d times", h.Hits())
	}
	for _, s := range delayedAll {
		if s < 50*time.Millisecond {
			t.Fatalf("a delayed send measured %s < 50ms", s)
		}
	}
	t.Logf("send median: baseline %s %v, delayed %s %v, excess over baseline %s", base, baseAll, delayed, delayedAll, delayed-base)
	const slack = 250 * time.Millisecond
	if delayed-base >= 50*time.Millisecond+slack {
		t.Fatalf("delayed median %s exceeds baseline %s by more than 50ms + %s", delayed, base, slack)
	}
}

func TestProbeRoomNameParse(t *testing.T) {
	p := DefaultRoomNamePrefix
	if ts, ok := probeRoomCreated(p+"acme corp 1700000000000", p); !ok || ts.UnixMilli() != 1700000000000 {
		t.Fatal(ts, ok)
	}
	for _, bad := range []string{"", "general", p + "acme", p + "acme -5", "x" + p + "acme 17"} {
		if _, ok := probeRoomCreated(bad, p); ok {
			t.Fatalf("%q parsed as a probe room", bad)
		}
	}
	if !strings.HasPrefix(p, "mxprobe") {
		t.Fatal(p)
	}
}

// The bot's token is cancelled twice in one run (another process logging
// in on its device, say): once before send, once before cleanup. The main
// path logs in again once, and so may the cleanup: the room is left and
// forgotten, with no cleanup failure.
func TestCleanupLogsInAgain(t *testing.T) {
	d := &testenv.SharedSynapse(t).Homeserver
	f := newFixture(t, d, d.URL, "twice")
	defer f.closeIdle()
	mustOK(t, f.run(t, "twice", 30*time.Second))
	cancelBot := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Logout(ctx, f.manager.Cached("twice/bot").AccessToken); err != nil {
			t.Error(err)
		}
	}
	f.probe.afterStep = func(step string) {
		if step == "join" || step == "power_levels" {
			cancelBot()
		}
	}
	defer func() { f.probe.afterStep = nil }()
	r := f.run(t, "twice", 30*time.Second)
	mustOK(t, r)
	if r.Counts[probes.CountTokenRefresh] != 2 || r.Counts[probes.CountCleanupFailure] != 0 {
		t.Fatalf("counts %v: want two re-logins and no cleanup failure", r.Counts)
	}
	botTok := f.token(t, "twice")
	if rooms := joined(t, d, botTok); len(rooms) != 0 {
		t.Fatalf("the bot is still in %v", rooms)
	}
}

// TestLostCreateRoomAnswerSweptNextRun: createRoom makes the room but its
// answer is cut, so the run cannot know the room; the tenant's next run
// sweeps it by its creation marker at once (not sweep_max_age later), and
// a room whose leave was refused is finished the same way. Without the
// hand-off both rooms stay until the hourly sweep.
func TestLostCreateRoomAnswerSweptNextRun(t *testing.T) {
	defer goleak.VerifyNone(t, testenv.LeakOptions()...)
	d := &testenv.SharedDendrite(t).Homeserver
	proxy, err := faultproxy.New(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	f := newFixture(t, d, proxy.URL, "lost")
	defer f.closeIdle()
	mustOK(t, f.run(t, "lost", 30*time.Second)) // log in, first sweep
	botTok := f.token(t, "lost")
	before := joined(t, d, botTok)

	h := proxy.Add(faultproxy.Rule{Method: "POST", Path: "/createRoom$", Times: 1, Fault: faultproxy.Fault{CutBody: true}})
	r := f.run(t, "lost", 30*time.Second)
	if r.OK() || r.FailedStep != StepCreateRoom || h.Hits() != 1 {
		t.Fatalf("cut createRoom answer: %s %s at %s (hits %d)", r.Outcome, r.Class, r.FailedStep, h.Hits())
	}
	h.Remove()
	if got := joined(t, d, botTok); len(got) != len(before)+1 {
		t.Fatalf("the homeserver made no room behind the cut answer: %v → %v", before, got)
	}
	r = f.run(t, "lost", 30*time.Second)
	mustOK(t, r)
	if d := sweepDetail(r); !strings.Contains(d, "left and forgot 1 stale probe rooms") {
		t.Errorf("the next run did not sweep the lost room first: %q (steps %v)", d, stepNames(r))
	}
	h = proxy.Add(faultproxy.Rule{Method: "POST", Path: "/leave$", Times: 1, Fault: faultproxy.Fault{Status: 500, Body: []byte(`{"errcode":"M_UNKNOWN"}`)}})
	r = f.run(t, "lost", 30*time.Second)
	h.Remove()
	if h.Hits() != 1 || !slices.Contains(stepNames(r), StepLeave) {
		t.Fatalf("refused leave: hits %d, steps %v", h.Hits(), stepNames(r))
	}
	r = f.run(t, "lost", 30*time.Second)
	mustOK(t, r)
	if d := sweepDetail(r); !strings.Contains(d, "left and forgot 1 stale probe rooms") {
		t.Errorf("the run after a refused leave did not finish that room: %q (steps %v)", d, stepNames(r))
	}
	if after := joined(t, d, botTok); !slices.Equal(before, after) {
		t.Fatalf("probe rooms left: %v → %v", before, after)
	}
}

// sweepDetail is the note of the run's sweep step ("" without one).
func sweepDetail(r probes.Result) string {
	for _, st := range r.Steps {
		if st.Name == StepSweep {
			return st.Detail
		}
	}
	return ""
}

// TestSweepFindsHalfMadeRoom: a createRoom cut short by a homeserver stop can
// leave a room with its create event and the bot's join but no marker state;
// the sweep recognises it by the marker time its creation_content carries.
// A room of an earlier version (marker true, no time) and a room that is no
// probe room stay.
func TestSweepFindsHalfMadeRoom(t *testing.T) {
	d := &testenv.SharedDendrite(t).Homeserver
	f := newFixture(t, d, d.URL, "half")
	defer f.closeIdle()
	botTok := f.token(t, "half")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	create := func(content string) {
		t.Helper()
		if _, err := d.Do(ctx, "POST", "/_matrix/client/v3/createRoom", botTok, []byte(`{"preset":"private_chat","creation_content":`+content+`}`)); err != nil {
			t.Fatal(err)
		}
	}
	create(`{}`)
	create(`{"` + CreationMarker + `": true}`)
	keep := joined(t, d, botTok)
	create(fmt.Sprintf(`{"%s": %d}`, CreationMarker, time.Now().Add(-2*time.Hour).UnixMilli()))
	if n := len(joined(t, d, botTok)); n != len(keep)+1 {
		t.Fatalf("%d rooms joined, want %d", n, len(keep)+1)
	}
	r := f.run(t, "half", 30*time.Second)
	mustOK(t, r)
	if d := sweepDetail(r); !strings.Contains(d, "left and forgot 1 stale probe rooms") {
		t.Errorf("sweep: %q", d)
	}
	if after := joined(t, d, botTok); !slices.Equal(keep, after) {
		t.Fatalf("rooms %v → %v, want the half-made one gone and the others kept", keep, after)
	}
}
