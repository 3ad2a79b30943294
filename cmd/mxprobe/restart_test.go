package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// restartHomeserver is what the restart test needs of a homeserver, so the
// same test runs against the Synapse-faithful limiter in front of Dendrite
// and against a real Synapse: the URL mxprobe talks to (the same for the
// whole test), a way to register users, and the /login requests and 429s
// the homeserver saw.
type restartHomeserver struct {
	URL, ServerName string
	Register        func(t *testing.T, prefix string) (user, password string)
	// Logins counts /login requests that reached the homeserver's login
	// servlet (allowed or refused); Refusals counts 429 answers.
	Logins, Refusals func() int
	// Warm lets the first start log every account in without Synapse's
	// default rc_login.address (10 first logins at 5 per 27 min take half
	// an hour; the test is about restarts), then restores the default
	// limits for the rest of the test.
	Warm func(relaxed bool)
}

// limitedDendrite is the Dendrite harness behind the Synapse-faithful
// limiter (Synapse's default limits), at one stable URL.
func limitedDendrite(t *testing.T) restartHomeserver {
	d := &testenv.SharedDendrite(t).Homeserver
	relaxed := synlimit.Defaults()
	relaxed.LoginAddress = synlimit.Settings{PerSecond: 100, Burst: 1000}
	relaxed.LoginAccount = synlimit.Settings{PerSecond: 100, Burst: 1000}
	var lims [2]*synlimit.Proxy
	for i, c := range []*synlimit.Config{nil, &relaxed} {
		lims[i] = testenv.Limited(t, d, synlimit.Options{Config: c, Pause: -1})
	}
	var cur atomic.Pointer[synlimit.Proxy]
	cur.Store(lims[0])
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	t.Cleanup(front.Close)
	logins := func(p *synlimit.Proxy) int {
		n := p.Allowed()[synlimit.RcLoginAddress]
		for _, r := range p.Refusals() {
			if strings.HasSuffix(r.Path, "/login") {
				n++
			}
		}
		return n
	}
	return restartHomeserver{
		URL: front.URL, ServerName: d.ServerName,
		Register: func(t *testing.T, prefix string) (string, string) { return d.User(t, prefix) },
		Logins:   func() int { return logins(lims[0]) },
		Refusals: func() int { return len(lims[0].Refusals()) },
		Warm: func(on bool) {
			if on {
				cur.Store(lims[1])
			} else {
				cur.Store(lims[0])
			}
		},
	}
}

// realSynapse is a Synapse of the test's own with Synapse's default limits;
// Warm restarts it with rc_login opened and back (its buckets and metrics
// start afresh each time, so the counts are those since the last Warm).
func realSynapse(t *testing.T) restartHomeserver {
	syn := testenv.NewSynapse(t, testenv.SynapseOptions{})
	url := syn.URL
	count := func(name string, match ...string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		n, err := syn.Count(ctx, name, match...)
		if err != nil {
			t.Errorf("Synapse's metrics: %v", err)
		}
		return int(n)
	}
	return restartHomeserver{
		URL: syn.URL, ServerName: syn.ServerName,
		Register: func(t *testing.T, prefix string) (string, string) { return syn.User(t, prefix) },
		// Synapse's own count of /login answers, whatever their code.
		Logins: func() int {
			return count("synapse_http_server_response_time_seconds_count", `servlet="LoginRestServlet"`)
		},
		Refusals: func() int { return count("synapse_http_server_responses_total", `code="429"`) },
		Warm: func(on bool) {
			var limits map[string]any
			if on {
				limits = testenv.TestLoginLimits()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := syn.SetRateLimits(ctx, limits); err != nil {
				t.Fatal(err)
			}
			if syn.URL != url {
				t.Fatalf("Synapse came back on another port (%s, was %s)", syn.URL, url)
			}
		},
	}
}

// restartConfig: five tenants with a peer each, password logins, the
// default schedules (login every minute, round trip every 10 minutes) and
// limits, data_dir set; jitter 0.05 keeps the warm-up short (3 s for the
// login, 30 s for the round trip).
func restartConfig(hs restartHomeserver, dataDir string, accounts [][4]string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global: {homeserver_url: %q, server_name: %q, data_dir: %q, jitter: 0.05, shutdown_grace: 2s}\n%stenants:\n",
		hs.URL, hs.ServerName, dataDir, extra)
	for i, a := range accounts {
		fmt.Fprintf(&b, "  - id: t%d\n    bot: {method: password, user: %s, password: %s}\n    peer: {method: password, user: %s, password: %s}\n",
			i, a[0], a[1], a[2], a[3])
	}
	b.WriteString("probes:\n  - {name: login, type: login}\n  - {name: roundtrip, type: roundtrip}\n")
	return b.String()
}

// startUntilProbed starts a daemon on cfg and waits until every tenant's
// login and round trip passed since the start; it returns the daemon
// (running) and how long that took.
func startUntilProbed(t *testing.T, cfg string, tenants int, within time.Duration) (*daemon, time.Duration) {
	t.Helper()
	d, err := newDaemon(&cli{configFile: cfg}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := d.reload(); err != nil {
		t.Fatal(err)
	}
	passed := func() bool {
		for i := 0; i < tenants; i++ {
			for _, p := range []string{"login", "roundtrip"} {
				r, ok := latest(d, p, fmt.Sprintf("t%d", i))
				if !ok || r.Outcome != probes.OutcomeSuccess {
					return false
				}
			}
		}
		return true
	}
	deadline := time.Now().Add(within)
	for !passed() {
		if time.Now().After(deadline) {
			var bad []string
			for i := 0; i < tenants; i++ {
				for _, p := range []string{"login", "roundtrip"} {
					r, _ := latest(d, p, fmt.Sprintf("t%d", i))
					bad = append(bad, fmt.Sprintf("%s/t%d: %s %s %s %q", p, i, r.Outcome, r.Class, r.FailedStep, r.Error))
				}
			}
			d.shutdown()
			t.Fatalf("not every tenant probed within %s:\n%s", within, strings.Join(bad, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d, time.Since(t0)
}

// Issue 22, done-when 1: after every tenant was probed, mxprobe restarted
// twice within 5 minutes makes no new /login request, meets no 429, and
// every tenant's login and round trip pass within 2 minutes of each
// restart. The sessions file holds no secret in the log, and is 0600.
//
// Against Synapse itself (its own login count and 429s), and against the
// limiter model in front of Dendrite.
func TestRestartKeepsSessions(t *testing.T) {
	t.Run("synapse", func(t *testing.T) { restartKeepsSessions(t, realSynapse(t)) })
	t.Run("dendrite", func(t *testing.T) { restartKeepsSessions(t, limitedDendrite(t)) })
}

func restartKeepsSessions(t *testing.T, hs restartHomeserver) {
	var accounts [][4]string
	for i := 0; i < 5; i++ {
		bot, botPW := hs.Register(t, fmt.Sprintf("rs-bot%d", i))
		peer, peerPW := hs.Register(t, fmt.Sprintf("rs-peer%d", i))
		accounts = append(accounts, [4]string{bot, botPW, peer, peerPW})
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	// First start: every account logs in (the limits relaxed, see Warm).
	hs.Warm(true)
	warm := writeFile(t, "warm.yml", restartConfig(hs, dataDir, accounts, "synapse_limits: {login_budget: {logins: 100, window: 1s}}\n"))
	d, _ := startUntilProbed(t, warm, len(accounts), 2*time.Minute)
	d.shutdown()
	hs.Warm(false)
	fi, err := os.Stat(filepath.Join(dataDir, auth.SessionsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sessions file: %v %v", err, fi)
	}

	cfg := writeFile(t, "restart.yml", restartConfig(hs, dataDir, accounts, ""))
	logins0 := hs.Logins()
	for i := 1; i <= 2; i++ {
		d, took := startUntilProbed(t, cfg, len(accounts), 2*time.Minute)
		d.shutdown()
		t.Logf("restart %d: every tenant's login and round trip passed %s after the start", i, took.Round(time.Millisecond))
	}
	if n := hs.Logins() - logins0; n != 0 {
		t.Errorf("%d /login requests after the restarts, want 0", n)
	}
	if n := hs.Refusals(); n != 0 {
		t.Errorf("%d 429 answers, want 0", n)
	}
}
