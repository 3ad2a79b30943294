package auth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// asDeployment is a Synapse with OpenMeet's application service registered
// (a registration file in app_service_config_files), a bot user the service
// registered in its exclusive namespace, and a password peer.
type asDeployment struct {
	d       *testenv.Homeserver
	rotate  func(ctx context.Context, id, token string) error
	token   string
	peer    string
	peerPW  string
	outside string
	pushes  *atomic.Int64
	pushed  chan struct{}
	service string
}

func newASDeployment(t *testing.T) *asDeployment {
	t.Helper()
	// The application service's own endpoint: the homeserver pushes the
	// namespace's events to it (PUT /_matrix/app/v1/transactions/{txnId}).
	var pushes atomic.Int64
	pushed := make(chan struct{})
	asSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pushes.Add(1) == 1 {
			close(pushed)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(asSrv.Close)
	dep := &asDeployment{token: "as-token-" + fmt.Sprint(time.Now().UnixNano()), pushes: &pushes, pushed: pushed, service: "openmeet-appservice"}
	syn := testenv.NewSynapse(t, testenv.SynapseOptions{RateLimits: testenv.TestLoginLimits(), AppServices: []testenv.AppService{{
		ID: dep.service, URL: asSrv.URL, ASToken: dep.token, HSToken: "hs-token-test",
		SenderLocalpart: dep.service, ExclusiveUsers: "@openmeet-bot-.*:localhost",
	}}})
	dep.d, dep.rotate = &syn.Homeserver, syn.RotateAppServiceToken
	testenv.MarkIntegration(t, "application service registered with Synapse")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := dep.d.RegisterAppServiceUser(ctx, dep.token, "openmeet-bot-acme"); err != nil {
		t.Fatalf("registering the namespace bot: %v", err)
	}
	dep.peer, dep.peerPW = dep.d.User(t, "as-peer")
	dep.outside, _ = dep.d.User(t, "as-outsider")
	return dep
}

func (dep *asDeployment) config(t *testing.T, tenants string) *config.Config {
	t.Helper()
	yml := fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: %s
tenants:
%sprobes:
  - name: roundtrip
    type: roundtrip
    timeout: 30s
    roundtrip:
      peer: {method: password, user: %s, password: %s}
`, dep.d.URL, dep.d.ServerName, tenants, dep.peer, dep.peerPW)
	env := map[string]string{"MATRIX_APPSERVICE_ID": dep.service, "MATRIX_APPSERVICE_TOKEN": dep.token}
	cfg, err := config.Parse([]byte(yml), "as-test.yml", func(k string) string { return env[k] }, kinds()...)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	return cfg
}

func asStepNames(r probes.Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

// Done-when 5: the appservice method runs login (whoami with the token and
// the asserted user) and the room round trip against Synapse, as the
// service's sender (the platform's own bot, from MATRIX_APPSERVICE_*) and as
// a bot of its namespace, on Synapse; a wrong token fails at the first step as
// auth_failed; a user outside the namespace is refused as forbidden.
func TestAppServiceLoginAndRoundtrip(t *testing.T) {
	dep := newASDeployment(t)
	cfg := dep.config(t, `  - id: acme
    bot: {method: appservice, user: openmeet-bot-acme}
  - id: wrong
    bot: {method: appservice, user: openmeet-bot-acme, access_token: not-the-as-token}
  - id: outside
    bot: {method: appservice, user: `+dep.outside+`}
`)
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	login := &auth.LoginProbe{Name: "login", Manager: mgr, Tenants: cfg.TenantMap(nil)}
	p, _ := cfg.Probe("roundtrip")
	rt := &matrix.RoundtripProbe{Name: "roundtrip", Manager: mgr, Tenants: cfg.TenantMap(nil), Settings: roundtripSettings(t, p)}

	for tenant, want := range map[string]string{
		config.DefaultAppServiceTenant: "@" + dep.service + ":" + dep.d.ServerName,
		"acme":                         "@openmeet-bot-acme:" + dep.d.ServerName,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		lr := login.Run(ctx, tenant)
		rr := rt.Run(ctx, tenant)
		cancel()
		for _, r := range []probes.Result{lr, rr} {
			if !r.OK() {
				t.Fatalf("%s %s failed at %s (%s): %s; steps %v", tenant, r.Probe, r.FailedStep, r.Class, r.Error, asStepNames(r))
			}
			if r.Method != config.MethodAppService {
				t.Errorf("%s %s: method %q", tenant, r.Probe, r.Method)
			}
			if b, _ := json.Marshal(r); strings.Contains(string(b), dep.token) {
				t.Errorf("%s: the as_token leaks into the result: %s", tenant, b)
			}
		}
		for _, s := range rr.Steps {
			// The sweep is a soft step: its failure (Synapse refusing
			// /sync to the service's sender) would not fail the run.
			if !s.OK {
				t.Errorf("%s: step %s failed: %s", tenant, s.Name, s.Error)
			}
		}
		if got := asStepNames(lr); strings.Join(got, ",") != "login,whoami" {
			t.Errorf("%s: login steps %v", tenant, got)
		}
		if _, ok := rr.Signals[probes.SignalDeliverySeconds]; !ok {
			t.Errorf("%s: the round trip measured no delivery: %v", tenant, asStepNames(rr))
		}
		sess := mgr.Cached(tenant + "/bot")
		if sess == nil || sess.UserID != want || sess.AccessToken != dep.token {
			t.Fatalf("%s: the round trip's session %v, want %s with the as_token", tenant, sess, want)
		}
	}
	select {
	case <-dep.pushed:
	case <-time.After(20 * time.Second):
		t.Error("the homeserver pushed no transaction to the application service: is the registration loaded?")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for tenant, want := range map[string]probes.Class{"wrong": probes.ClassAuthFailed, "outside": probes.ClassForbidden} {
		for _, r := range []probes.Result{login.Run(ctx, tenant), rt.Run(ctx, tenant)} {
			if r.OK() || r.FailedStep != "login" || r.Class != want || len(r.Steps) != 1 {
				t.Errorf("%s %s: failed at %q (%s), want login (%s); steps %v: %s", tenant, r.Probe, r.FailedStep, r.Class, want, asStepNames(r), r.Error)
			}
		}
	}
	if r := login.Run(ctx, "outside"); !strings.Contains(r.Error, "may not act as @"+dep.outside) {
		t.Errorf("forbidden does not say why: %s", r.Error)
	}

	// The operator rotates the token at the homeserver: the cached session
	// of the old one meets M_UNKNOWN_TOKEN, and the probes fail at their
	// first step as auth_failed, not later.
	if err := dep.rotate(ctx, dep.service, dep.token+"-rotated"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []probes.Result{login.Run(ctx, "acme"), rt.Run(ctx, "acme"), rt.Run(ctx, config.DefaultAppServiceTenant)} {
		if r.OK() || r.Class != probes.ClassAuthFailed || r.FailedStep != "login" {
			t.Errorf("%s %s after rotation: failed at %q (%s): %s; steps %v", r.Tenant, r.Probe, r.FailedStep, r.Class, r.Error, asStepNames(r))
		}
	}
}
