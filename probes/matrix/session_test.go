package matrix

import (
	"context"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// countingMethod hands out a new token on every login.
type countingMethod struct{ logins int }

func (m *countingMethod) Login(context.Context, *auth.Manager, auth.Account, *probes.Recorder) (*auth.Session, error) {
	m.logins++
	return &auth.Session{AccessToken: "tok" + string(rune('a'+m.logins)), HomeserverURL: "http://127.0.0.1:1"}, nil
}

func unknownToken() error {
	return mautrix.HTTPError{
		Response:  &http.Response{StatusCode: http.StatusUnauthorized},
		RespError: &mautrix.RespError{ErrCode: "M_UNKNOWN_TOKEN", Err: "expired"},
	}
}

func newSessionRunner(t *testing.T) (*runner, *actor, *countingMethod) {
	t.Helper()
	meth := &countingMethod{}
	m := auth.NewManager(nil)
	m.Register("counting", meth)
	acct := auth.Account{Key: "t/bot", Tenant: "t", Role: "bot", HomeserverURL: "http://127.0.0.1:1",
		Config: config.Account{Method: "counting"}}
	r := &runner{rec: probes.NewRecorder("p", "roundtrip", "t"), m: m}
	a := &actor{acct: acct}
	if err := r.login(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	return r, a, meth
}

// A renewed token that the homeserver refuses at once is not renewed again:
// no login loop within a run.
func TestRecoveryRefusedAtOnceStops(t *testing.T) {
	r, a, meth := newSessionRunner(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	refuse := func(context.Context, *mautrix.Client) error { return unknownToken() }
	for i := 0; i < 3; i++ {
		if err, _, _ := r.attempt(ctx, a, false, refuse); err == nil {
			t.Fatal("a refused call succeeded")
		}
	}
	if meth.logins != 2 { // the first login and one renewal
		t.Fatalf("logins = %d, want 2 (one renewal, then no more while the new token is unproven)", meth.logins)
	}
}

// A run that outlasts a short token lifetime renews each time the token it
// renewed has worked and then expired, up to maxRecoveries times.
func TestRecoveryAfterProvenTokenExpires(t *testing.T) {
	r, a, meth := newSessionRunner(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Each token serves one call and then expires.
	served := map[string]bool{}
	once := func(_ context.Context, cli *mautrix.Client) error {
		if served[cli.AccessToken] {
			return unknownToken()
		}
		served[cli.AccessToken] = true
		return nil
	}
	if err, _, _ := r.attempt(ctx, a, false, once); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= maxRecoveries; i++ {
		if err, _, _ := r.attempt(ctx, a, false, once); err != nil {
			t.Fatalf("call %d after %d renewals: %v", i, i-1, err)
		}
	}
	if err, _, _ := r.attempt(ctx, a, false, once); err == nil {
		t.Fatalf("renewed more than %d times in one run", maxRecoveries)
	}
	if meth.logins != 1+maxRecoveries {
		t.Fatalf("logins = %d, want %d", meth.logins, 1+maxRecoveries)
	}
}
