package auth_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// masDeployment is the emulator with a homeserver behind it, tenants whose
// bots log in with mas_oidc and a peer that uses MAS's compat password
// login, described by a parsed mxprobe configuration. On Synapse (the
// platform's deployment) Synapse delegates its authentication to the
// emulator and judges every token itself; on Dendrite the emulator's front
// maps MAS sessions to Dendrite sessions.
type masDeployment struct {
	emu *masemu.Emulator
	syn *testenv.Synapse // nil on Dendrite
	cfg *config.Config
	mgr *auth.Manager
	// peer is the peer's MAS localpart and password.
	peer, peerPW string
}

// masHomeserver chooses the homeserver behind the emulator.
type masHomeserver struct {
	dendrite bool
	// rateLimits for Synapse (nil: Synapse's defaults).
	rateLimits map[string]any
}

var onSynapse = masHomeserver{}

func newMASDeployment(t *testing.T, hs masHomeserver, opts masemu.Options, tenants ...string) *masDeployment {
	t.Helper()
	dep := &masDeployment{}
	serverName := "localhost"
	if hs.dendrite {
		d := testenv.SharedDendrite(t)
		testenv.MarkIntegration(t, "MAS emulator in front of Dendrite")
		opts.Dendrite = d
		serverName = d.ServerName
		emu, err := masemu.Start(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emu.Close)
		dep.emu = emu
	} else {
		dep.emu, dep.syn = masemu.StartWithSynapse(t, opts, testenv.SynapseOptions{RateLimits: hs.rateLimits})
		testenv.MarkIntegration(t, "Synapse delegating its authentication to the MAS emulator")
		serverName = dep.syn.ServerName
	}
	emu := dep.emu
	suffix := strings.ToLower(fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff))
	var tb strings.Builder
	for _, id := range tenants {
		id := id + suffix
		user := "openmeet-bot-" + id
		emu.AddUpstreamUser(id, "bot-"+id+"@openmeet.net", "pw-"+id, user)
		fmt.Fprintf(&tb, "  - id: %s\n    bot: {method: mas_oidc, user: %s, password: pw-%s}\n", id, user, id)
	}
	peer := "mxprobe-peer-" + suffix
	emu.SetMASPassword(peer, "peer-pw")
	dep.peer, dep.peerPW = peer, "peer-pw"
	yml := fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
mas:
  public_url: %s
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream: {adapter: openmeet, api_url: %s}
tenants:
%sprobes:
  - name: roundtrip
    type: roundtrip
    timeout: 30s
    roundtrip:
      peer: {method: mas_compat_password, user: %s, password: peer-pw}
`, emu.HomeserverURL, serverName, emu.MASURL, emu.UpstreamURL, tb.String(), peer)
	cfg, err := config.Parse([]byte(yml), "mas-test.yml", func(string) string { return "" }, kinds()...)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	auth.RegisterMAS(mgr, cfg.MAS)
	dep.cfg, dep.mgr = cfg, mgr
	return dep
}

// Done-when 1: two tenants log in through the emulator (the first login
// meets the account creation form, the second does not), then run the room
// round trip against Dendrite with those MAS tokens.
func TestMASTwoTenantsLoginAndRoundtrip(t *testing.T) {
	dep := newMASDeployment(t, onSynapse, masemu.Options{}, "alpha", "beta")
	login := &auth.LoginProbe{Name: "login", Manager: dep.mgr, Tenants: dep.cfg.TenantMap(nil)}
	p, _ := dep.cfg.Probe("roundtrip")
	rt := &matrix.RoundtripProbe{Name: "roundtrip", Manager: dep.mgr, Tenants: dep.cfg.TenantMap(nil), Settings: roundtripSettings(t, p)}
	for _, tn := range dep.cfg.Tenants {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		first := login.Run(ctx, tn.ID)
		second := login.Run(ctx, tn.ID)
		round := rt.Run(ctx, tn.ID)
		cancel()
		for i, r := range []probes.Result{first, second, round} {
			if !r.OK() {
				t.Fatalf("%s run %d (%s) failed at %s (%s): %s\nsteps %v", tn.ID, i, r.Probe, r.FailedStep, r.Class, r.Error, stepNames(r))
			}
			assertNoSecrets(t, r, "pw-"+tn.ID, "peer-pw")
		}
		if !hasStep(first, "account_create") || hasStep(second, "account_create") {
			t.Errorf("%s: account creation form: first %v, second %v", tn.ID, stepNames(first), stepNames(second))
		}
		if first.Method != config.MethodMASOIDC || round.Method != config.MethodMASOIDC {
			t.Errorf("%s: methods %q / %q", tn.ID, first.Method, round.Method)
		}
		if _, ok := round.Signals[probes.SignalDeliverySeconds]; !ok {
			t.Errorf("%s: the round trip measured no delivery: %v", tn.ID, stepNames(round))
		}
		sess := dep.mgr.Cached(tn.ID + "/bot")
		if sess == nil || !strings.HasPrefix(sess.AccessToken, "mat_") {
			t.Fatalf("%s: the round trip did not use a MAS token", tn.ID)
		}
	}
	if st := dep.emu.Stats(); st.AccountsCreated != 2 || st.Registrations != 1 || st.CompatLogins == 0 {
		t.Errorf("emulator stats %+v", st)
	}
}

// Done-when 3: with a 2 s access token TTL, a probe scheduled every second
// never fails over 15 runs per tenant: it refreshes before expiry or recovers from
// M_UNKNOWN_TOKEN, and the refreshes are counted. Two tenants run side by
// side: "early" renews 700 ms before expiry (refresh in time), "late" never
// renews ahead, so each expiry meets M_UNKNOWN_TOKEN and is recovered.
func TestMASShortTTLScheduledNeverFails(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED: 15 runs at a 1 s schedule (-short)")
	}
	// The subject is token renewal against Synapse's own token checks: the
	// bots send a message every second, past rc_message's default burst, so
	// that limiter is opened for this test.
	relaxed := map[string]any{"rc_message": map[string]any{"per_second": 100, "burst_count": 1000}}
	dep := newMASDeployment(t, masHomeserver{rateLimits: relaxed}, masemu.Options{AccessTTL: 2 * time.Second}, "early", "late")
	// A public room the bots join on their first run (room_message probe),
	// made by the peer (a MAS user: a delegating Synapse registers no one).
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	tok, err := dep.emu.CompatPasswordLogin(ctx, dep.peer, dep.peerPW)
	if err != nil {
		t.Fatal(err)
	}
	front := &testenv.Homeserver{URL: dep.emu.HomeserverURL, ServerName: dep.emu.ServerName}
	b, err := front.Do(ctx, "POST", "/_matrix/client/v3/createRoom", tok, []byte(`{"preset":"public_chat","name":"mxprobe ttl test"}`))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := jsonUnmarshal(b, &room); err != nil || room.RoomID == "" {
		t.Fatalf("createRoom: %s", b)
	}

	// The test ends when every tenant has had wantRuns runs (at least
	// wantRuns-1 s under the 1 s schedule: several 2 s token lifetimes),
	// not after a fixed time, so a slow machine makes it longer, not red.
	// A tick that finds the previous run of the tenant still in flight is
	// skipped by the engine (runs are not stacked): not a failure, and not a
	// run either.
	const wantRuns = 15
	var mu sync.Mutex
	results := map[string][]probes.Result{}
	skipped := map[string]int{}
	enough := make(chan struct{})
	engine := probes.NewEngine(4, probes.SinkFunc(func(r probes.Result) {
		mu.Lock()
		defer mu.Unlock()
		if r.Outcome == probes.OutcomeSkipped {
			skipped[r.Tenant]++
			return
		}
		results[r.Tenant] = append(results[r.Tenant], r)
		for _, tn := range dep.cfg.Tenants {
			if len(results[tn.ID]) < wantRuns {
				return
			}
		}
		select {
		case <-enough:
		default:
			close(enough)
		}
	}))
	sched, _ := config.ParseSchedule("@every 1s")
	var jobs []*probes.Job
	for i, tn := range dep.cfg.Tenants {
		mgr := auth.NewManager(dep.mgr.HTTP)
		auth.RegisterMAS(mgr, dep.cfg.MAS)
		mgr.RefreshBefore = 700 * time.Millisecond
		if i == 1 {
			mgr.RefreshBefore = -time.Hour // only ever renew after M_UNKNOWN_TOKEN
		}
		probe := &matrix.RoomMessageProbe{Name: "room_message", Manager: mgr, Tenants: dep.cfg.TenantMap(nil),
			Settings: &matrix.RoomMessageSettings{RoomID: room.RoomID, SyncTimeout: config.Duration(5 * time.Second)}}
		jobs = append(jobs, &probes.Job{Name: "room_message_" + tn.ID, Type: matrix.TypeRoomMessage, Schedule: sched.Schedule,
			Timeout: 10 * time.Second, Subjects: []string{tn.ID}, Prober: probe})
	}
	engine.SetJobs(jobs)
	s := probes.NewScheduler(engine, 0)
	s.Start(engine.Jobs())
	select {
	case <-enough:
	case <-time.After(3 * time.Minute):
		t.Errorf("fewer than %d runs per tenant after 3 minutes at @every 1s", wantRuns)
	}
	s.Stop()
	engine.Shutdown(15 * time.Second)

	mu.Lock()
	defer mu.Unlock()
	for _, tn := range dep.cfg.Tenants {
		refreshes, logins := 0, 0
		for n, r := range results[tn.ID] {
			if !r.OK() {
				t.Errorf("%s run %d: %s at %s (%s): %s; steps %v", tn.ID, n, r.Outcome, r.FailedStep, r.Class, r.Error, stepNames(r))
			}
			refreshes += r.Counts[probes.CountTokenRefresh]
			for k, c := range r.Counts {
				if strings.HasPrefix(k, auth.LoginCountPrefix) {
					logins += c
				}
			}
			assertNoSecrets(t, r, "pw-"+tn.ID)
		}
		t.Logf("%s: runs %d (ticks skipped while a run was in flight: %d), refreshes counted %d, logins %d",
			tn.ID, len(results[tn.ID]), skipped[tn.ID], refreshes, logins)
		if refreshes < 4 {
			t.Errorf("%s: %d refreshes counted; want at least 4 in %d runs 1 s apart with a 2 s TTL", tn.ID, refreshes, len(results[tn.ID]))
		}
		if logins != 1 {
			t.Errorf("%s: %d logins; refreshes should have kept the first session alive", tn.ID, logins)
		}
	}
	st := dep.emu.Stats()
	t.Logf("emulator: %d refreshes, %d unknown-token answers, %d refresh refusals", st.Refreshes, st.UnknownTokenReply, st.RefreshRejected)
	if st.UnknownTokenReply < 3 {
		t.Errorf("the late tenant met M_UNKNOWN_TOKEN %d times; the recovery path was not exercised", st.UnknownTokenReply)
	}
}

func TestMASPasswordSecretNeverInConfigErrors(t *testing.T) {
	// A mas_oidc tenant without the upstream API: the error names the field,
	// never the password.
	_, err := config.Parse([]byte(`mas: {redirect_uri: "http://localhost:9005/cb"}
tenants:
  - id: a
    homeserver_url: https://hs.example.org
    bot: {method: mas_oidc, password: sekret-pw}
`), "c.yml", func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "mas.upstream.api_url") || strings.Contains(err.Error(), "sekret-pw") {
		t.Fatalf("err = %v", err)
	}
}
