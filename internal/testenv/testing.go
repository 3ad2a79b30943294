package testenv

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// SkipEnv is the explicit flag that lets integration tests skip when Dendrite
// is not installed. Without it a missing homeserver fails the test.
const SkipEnv = "MXPROBE_SKIP_INTEGRATION"

var (
	sharedMu  sync.Mutex
	shared    *Dendrite
	sharedErr error

	sharedSynMu  sync.Mutex
	sharedSyn    *Synapse
	sharedSynErr error
)

// TestLoginLimits are the rc_login settings of the package-shared Synapse:
// a package's tests log in from one address far more often than a
// deployment's clients do, and Synapse's default (5, then one per 333 s per
// address) would make them wait on each other. Every other limiter keeps
// Synapse's default; tests of the login limits start a Synapse of their own.
func TestLoginLimits() map[string]any {
	lim := map[string]any{"per_second": 100, "burst_count": 1000}
	return map[string]any{"rc_login": map[string]any{"address": lim, "account": lim, "failed_attempts": lim}}
}

// SharedSynapse returns a Synapse shared by the tests of one package (SQLite,
// TestLoginLimits, other limits Synapse's defaults), starting it on first
// use. Main stops it.
func SharedSynapse(t testing.TB) *Synapse {
	t.Helper()
	sharedSynMu.Lock()
	defer sharedSynMu.Unlock()
	if sharedSyn == nil && sharedSynErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		sharedSyn, sharedSynErr = StartSynapse(ctx, SynapseOptions{RateLimits: TestLoginLimits()})
		cancel()
	}
	if sharedSynErr != nil {
		missingSynapse(t, sharedSynErr)
	}
	MarkIntegration(t, "real Synapse "+sharedSyn.Version)
	return sharedSyn
}

// NewSynapse starts a Synapse of the test's own, stopped at cleanup.
func NewSynapse(t testing.TB, opts SynapseOptions) *Synapse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	s, err := StartSynapse(ctx, opts)
	if err != nil {
		missingSynapse(t, err)
	}
	t.Cleanup(s.Stop)
	MarkIntegration(t, "real Synapse "+s.Version)
	return s
}

func missingSynapse(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("SKIPPED integration test (%s=1): %v", SkipEnv, err)
	}
	t.Fatalf("local Synapse unavailable: %v (set %s=1 to skip integration tests explicitly)", err, SkipEnv)
}

// SharedDendrite returns a homeserver shared by the tests of one package,
// starting it on first use. Call StopShared from TestMain.
func SharedDendrite(t testing.TB) *Dendrite {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		shared, sharedErr = StartDendrite(ctx, DendriteOptions{})
		cancel()
	}
	if sharedErr != nil {
		missing(t, sharedErr)
	}
	MarkIntegration(t, "real Dendrite "+DendriteVersion)
	return shared
}

// NewDendrite starts a homeserver of the test's own, stopped at cleanup.
func NewDendrite(t testing.TB, opts DendriteOptions) *Dendrite {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := StartDendrite(ctx, opts)
	if err != nil {
		missing(t, err)
	}
	t.Cleanup(d.Stop)
	MarkIntegration(t, "real Dendrite "+DendriteVersion)
	return d
}

func missing(t testing.TB, err error) {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("SKIPPED integration test (%s=1): %v", SkipEnv, err)
	}
	t.Fatalf("local Dendrite unavailable: %v (set %s=1 to skip integration tests explicitly)", err, SkipEnv)
}

// StopShared stops the package's shared homeserver, if one was started.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
	sharedSynMu.Lock()
	defer sharedSynMu.Unlock()
	if sharedSyn != nil {
		sharedSyn.Stop()
		sharedSyn = nil
	}
}

// User registers a fresh account with a unique name and returns its
// localpart and password.
func (d *Homeserver) User(t testing.TB, prefix string) (user, password string) {
	t.Helper()
	user = fmt.Sprintf("%s-%s", prefix, randomHex(4))
	password = "pw-" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := d.Register(ctx, user, password, false); err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	return user, password
}

// LeakOptions are the goleak options that ignore the harness's own
// goroutines (the one waiting on the Dendrite process).
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/mxprobe/mxprobe/internal/testenv.serviceWait"),
	}
}

// MarkIntegration logs that the test uses a real service; `make test`'s
// report counts these lines, so a run shows which integration tests ran.
func MarkIntegration(t testing.TB, service string) {
	t.Helper()
	t.Logf("integration: %s", service)
}

// Main runs a test package: its tests, then stops the shared homeserver, then
// fails the package if goroutines were left behind (goleak), ignoring the
// harness's own and idle keep-alive connections of HTTP clients.
func Main(m *testing.M, opts ...goleak.Option) {
	// Per-user state (the CLI's room journal) goes to a folder of the run.
	state, err := os.MkdirTemp("", "mxprobe-state-")
	if err == nil {
		os.Setenv("XDG_STATE_HOME", state)
	}
	code := m.Run()
	StopShared()
	if code == 0 {
		opts = append(append(LeakOptions(),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		), opts...)
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left behind: %v\n", err)
			code = 1
		}
	}
	if state != "" {
		_ = os.RemoveAll(state)
	}
	os.Exit(code)
}
