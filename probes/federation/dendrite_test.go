package federation

import (
	"context"
	"slices"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// startFederatingDendrites starts two Dendrites federating over TLS on
// loopback (server names 127.0.0.1:<https port>), their certificates from
// the test CA.
func startFederatingDendrites(t *testing.T) (ca *testenv.TestCA, local, remote *testenv.Dendrite) {
	t.Helper()
	ca = testenv.NewTestCA(t)
	leaf := ca.Issue(t, time.Now().Add(90*24*time.Hour), "127.0.0.1")
	fed := &testenv.DendriteFederation{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}
	local = testenv.NewDendrite(t, testenv.DendriteOptions{Federation: fed})
	remote = testenv.NewDendrite(t, testenv.DendriteOptions{Federation: fed})
	return ca, local, remote
}

// TestAgainstFederatingDendrites: the probe succeeds for both server
// names of two real federating Dendrites (their real keys and
// signatures); with the remote one stopped the run fails as unreachable at
// connect, and recovers when it is back.
func TestAgainstFederatingDendrites(t *testing.T) {
	ca, local, remote := startFederatingDendrites(t)
	p := newTestProbe(t, "", ca.CAFile, 0, local.ServerName, remote.ServerName)
	want := []string{StepConnect, StepTLS, StepVersion, StepKeys, StepSignature, StepKeyValidity}
	check := func(r probes.Result) {
		t.Helper()
		if r.Outcome != probes.OutcomeSuccess {
			t.Fatalf("run: %s", describe(r))
		}
		if got := stepNames(r); !slices.Equal(got, append(slices.Clone(want), want...)) {
			t.Errorf("steps %v", got)
		}
		for _, name := range []string{local.ServerName, remote.ServerName} {
			if r.Signals[SignalUp+":"+name] != 1 {
				t.Errorf("%s not up: %v", name, r.Signals)
			}
			// Dendrite's keys are valid for about a week.
			if v := r.Signals[SignalKeyValidUntil+":"+name]; v < float64(time.Now().Add(24*time.Hour).Unix()) {
				t.Errorf("%s: keys valid until %v", name, v)
			}
			for _, s := range want {
				if d, ok := r.Signals[SignalStepPrefix+s+":"+name]; !ok || d <= 0 {
					t.Errorf("%s: step %s not timed (%v)", name, s, d)
				}
			}
		}
	}
	check(runChecked(t, p))

	remote.Pause()
	r := runChecked(t, p)
	if r.Outcome != probes.OutcomeFailure || r.Class != probes.ClassUnreachable || r.FailedStep != StepConnect {
		t.Fatalf("remote stopped: %s", describe(r))
	}
	if r.Signals[SignalUp+":"+local.ServerName] != 1 || r.Signals[SignalUp+":"+remote.ServerName] != 0 {
		t.Errorf("up signals with the remote stopped: %v", r.Signals)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := remote.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	check(runChecked(t, p))
}

// TestDeliveryAcrossDendrites: the tenant's bot on one Dendrite and a peer
// on the other make a round trip over federation: the peer joins the
// bot's room over federation and its /sync carries the bot's message
// (delivery latency as message_delivery_seconds); both leave and forget
// the room. With the remote homeserver stopped the run fails at the peer's
// login, and succeeds again once it is back.
func TestDeliveryAcrossDendrites(t *testing.T) {
	_, local, remote := startFederatingDendrites(t)
	botUser, botPW := local.User(t, "fedbot")
	peerUser, peerPW := remote.User(t, "fedpeer")
	tenants := map[string]*config.Tenant{"acme": {ID: "acme", HomeserverURL: local.URL, ServerName: local.ServerName,
		Bot: config.Account{Method: config.MethodPassword, User: botUser, Password: promcfg.Secret(botPW)}}}
	p := &DeliveryProbe{Name: "fed_rt", Manager: auth.NewManager(nil), Tenants: tenants, Settings: &DeliverySettings{
		Peer:        RemotePeer{HomeserverURL: remote.URL, ServerName: remote.ServerName, User: peerUser, Password: promcfg.Secret(peerPW)},
		SyncTimeout: config.Duration(5 * time.Second),
	}}
	run := func() probes.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		r := p.Run(ctx, "acme")
		if err := probetype.CheckResult(DeliveryType(), r); err != nil {
			t.Error(err)
		}
		return r
	}
	check := func(r probes.Result, loggedIn bool) {
		t.Helper()
		if r.Outcome != probes.OutcomeSuccess {
			t.Fatalf("round trip: %s", describe(r))
		}
		want := []string{StepPeerLogin, StepCreateRoom, StepPeerJoin, StepPeerSync, StepSend, StepReceive, StepCleanup}
		if loggedIn {
			// The bot's login (a cached session records no step).
			want = append([]string{StepLogin}, want...)
		}
		if got := stepNames(r); !slices.Equal(got, want) {
			t.Errorf("steps %v, want %v", got, want)
		}
		if d, ok := r.Signals[probes.SignalDeliverySeconds]; !ok || d <= 0 || d > 30 {
			t.Errorf("delivery %v (%v)", d, ok)
		}
		for _, s := range r.Steps {
			if !s.OK {
				t.Errorf("step %s: %s", s.Name, s.Error)
			}
		}
	}
	check(run(), true)
	// Nothing left behind: the bot is in no room (it left and forgot).
	if rooms := joinedRooms(t, p, tenants["acme"]); len(rooms) != 0 {
		t.Errorf("the bot is still in %v", rooms)
	}
	check(run(), false) // cached sessions this time

	remote.Pause()
	p.Manager = auth.NewManager(nil) // no cached peer session: the login meets the stopped server
	r := run()
	if r.Outcome != probes.OutcomeFailure || r.Class != probes.ClassUnreachable || r.FailedStep != StepPeerLogin {
		t.Fatalf("remote stopped: %s", describe(r))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := remote.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	check(run(), false)
}

func joinedRooms(t *testing.T, p *DeliveryProbe, tn *config.Tenant) []id.RoomID {
	t.Helper()
	acct, err := auth.NewAccount(tn, "bot", tn.Bot)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec := probes.NewRecorder("", "", "")
	sess, err := p.Manager.Session(ctx, acct, rec)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := p.Manager.Client(sess)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.JoinedRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return resp.JoinedRooms
}
