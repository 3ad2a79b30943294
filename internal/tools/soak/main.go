// Command soak is `make soak` (not in CI): it runs `mxprobe serve` for a
// long time (SOAK, default 30m) with 50 tenants at a short interval against
// a real homeserver, through a fault proxy that injects a random fault for
// a while every minute. The homeserver is Synapse on a PostgreSQL of its
// own (internal/testenv: Debian's postgresql on loopback, data in a temp
// dir, stopped at the end), the way production runs it, with the bots and
// the peer exempted from Synapse's rate limits through the admin API as
// docs/synapse.md tells operators; --homeserver dendrite runs the local
// Dendrite instead. On Synapse the soak runs the deployment mxprobe
// watches by default (--mas): Synapse delegates its authentication to the
// MAS emulator (internal/testenv/masemu), every account is a MAS user, the
// bots of the first --mas-oidc tenants log in through MAS and the
// platform's upstream provider (mas_oidc, within the provider's limit on
// code exchanges), the other bots and the peer through MAS's compatibility
// password login. Besides the proxy's faults, Synapse itself is restarted,
// 429 storms answer every request for a while, and (with MAS) the MAS
// emulator goes down and comes back with its state. Every minute
// it prints the daemon's heap, goroutines and RSS (from its /metrics) and
// Synapse's own 5xx and 429 answers, so growth shows; at the end, after a
// quiet period without faults, it prints the probe rooms left behind on the
// homeserver and how often each alert fired and resolved (a webhook
// notifier reports to this program), and fails if any room is left, any
// alert fired or resolved other than exactly once, or heap or goroutines
// grew.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/faultproxy"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
)

func main() {
	bin := flag.String("mxprobe", "bin/mxprobe", "mxprobe binary")
	dur := flag.Duration("duration", 30*time.Minute, "soak duration (faults during all but the last quiet period)")
	tenants := flag.Int("tenants", 50, "tenants")
	quiet := flag.Duration("quiet", 3*time.Minute, "fault-free time at the end, for alerts to resolve")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "random seed of the fault plan")
	roundtripEvery := flag.String("roundtrip-every", "30s", "round trip interval (Dendrite on SQLite panics with SQLITE_BUSY under heavy write load)")
	hsKind := flag.String("homeserver", "synapse", "synapse (on PostgreSQL) or dendrite (on SQLite)")
	withMAS := flag.Bool("mas", true, "Synapse delegates its authentication to the MAS emulator (Synapse only; off with --homeserver dendrite)")
	masOIDC := flag.Int("mas-oidc", 10, "with --mas: tenants whose bots log in through MAS and the upstream provider (mas_oidc); the others use MAS's compat password login")
	faultList := flag.String("faults", "", "comma-separated fault names the plan draws from (default: all; see the list in the source)")
	flag.Parse()
	masSet := false
	flag.Visit(func(f *flag.Flag) { masSet = masSet || f.Name == "mas" })
	if *hsKind != "synapse" && *withMAS {
		if masSet {
			fmt.Fprintln(os.Stderr, "soak: --mas needs --homeserver synapse (Dendrite cannot delegate its authentication)")
			os.Exit(2)
		}
		*withMAS = false
	}
	o := options{bin: *bin, hsKind: *hsKind, dur: *dur, quiet: *quiet, tenants: *tenants, seed: *seed,
		roundtripEvery: *roundtripEvery, mas: *withMAS, masOIDC: min(max(*masOIDC, 0), *tenants)}
	plan, err := faultPlan(*faultList, o.mas)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	o.faults = plan
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type receiver struct {
	mu      sync.Mutex
	fired   map[string]int
	resolve map[string]int
	rules   map[string]string
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var p struct {
		Status string `json:"status"`
		Alert  struct {
			ID     string `json:"id"`
			Rule   string `json:"rule"`
			Tenant string `json:"tenant"`
		} `json:"alert"`
	}
	if err := json.NewDecoder(io.LimitReader(req.Body, 1<<20)).Decode(&p); err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rules[p.Alert.ID] = p.Alert.Rule + "/" + p.Alert.Tenant
	if p.Status == "resolved" {
		r.resolve[p.Alert.ID]++
	} else {
		r.fired[p.Alert.ID]++
	}
	w.WriteHeader(http.StatusNoContent)
}

// fault is one the plan draws: a rule installed for a while on the
// tenants' path to the homeserver, or (restartFault, masDownFault) an
// action of the soak's own.
type fault struct {
	name string
	rule faultproxy.Rule
}

// maxGrowth bounds the heap's and the goroutines' growth from after the
// warm-up to the end (the issue's "under 10 %").
const maxGrowth = 1.10

// faults are what the plan draws from (masDownFault only with MAS, after
// the others, so a seed draws the same plan without MAS as before).
var faults = []fault{
	{"login 502", faultproxy.Rule{Path: "/login$", Fault: faultproxy.Fault{Status: 502, Body: []byte("bad gateway")}}},
	{"login reset", faultproxy.Rule{Path: "/login$", Fault: faultproxy.Fault{Reset: true}}},
	{"createRoom 429", faultproxy.Rule{Path: "/createRoom$", Fault: faultproxy.RateLimited(300 * time.Millisecond)}},
	{"createRoom cut body", faultproxy.Rule{Path: "/createRoom$", Fault: faultproxy.Fault{CutBody: true}}},
	{"send 503", faultproxy.Rule{Path: "/send/", Fault: faultproxy.Fault{Status: 503, Body: []byte("unavailable")}}},
	{"sync slow 8s", faultproxy.Rule{Path: "/sync$", Fault: faultproxy.Fault{Delay: 8 * time.Second}}},
	{"invite hang", faultproxy.Rule{Path: "/invite$", Fault: faultproxy.Fault{Hang: true}}},
	{"everything slow 1s", faultproxy.Rule{Fault: faultproxy.Fault{Delay: time.Second}}},
	{"leave 500", faultproxy.Rule{Path: "/leave$", Fault: faultproxy.Fault{Status: 500, Body: []byte("{}")}}},
	{"whoami unknown token", faultproxy.Rule{Path: "/whoami$", Fault: faultproxy.UnknownToken(false)}},
	{"429 storm", faultproxy.Rule{Path: "/_matrix/client/", Fault: faultproxy.RateLimited(2 * time.Second)}},
	{restartFault, faultproxy.Rule{}},
	{masDownFault, faultproxy.Rule{}},
}

// faultPlan returns the faults the plan draws from: those named in list
// (comma-separated), or all that apply.
func faultPlan(list string, mas bool) ([]fault, error) {
	var out []fault
	for _, f := range faults {
		if f.name == masDownFault && !mas {
			continue
		}
		out = append(out, f)
	}
	if strings.TrimSpace(list) == "" {
		return out, nil
	}
	var chosen []fault
	var names []string
	for _, f := range out {
		names = append(names, f.name)
	}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		i := slices.Index(names, n)
		if i < 0 {
			return nil, fmt.Errorf("--faults: unknown fault %q (these apply: %s)", n, strings.Join(names, ", "))
		}
		chosen = append(chosen, out[i])
	}
	return chosen, nil
}

// soakLoginLimits is rc_login as an operator of 50 bots behind one address
// raises it (Synapse's default lets 3 logins through, then one every 6 s
// per address, and mxprobe's login budget derived from it 5 per 28 min).
func soakLoginLimits() map[string]any {
	return map[string]any{
		"address": map[string]any{"per_second": 1, "burst_count": 60},
		"account": map[string]any{"per_second": 1, "burst_count": 10},
	}
}

// acct is a Matrix account of the soak: its localpart and password, and
// the user the configuration names when that is not the localpart (a
// mas_oidc bot's platform slug).
type acct struct{ user, pw, login string }

// restartFault restarts the homeserver (stopped, then started again on the
// same ports and data after the fault's hold) instead of a proxy rule.
const restartFault = "homeserver restarted"

// masDownFault takes the MAS emulator down for the hold (connections
// refused; the reverse proxy answers MAS's login and logout 502) and brings
// it back on the same address with its state: MAS logins and refreshes
// fail meanwhile, and Synapse, which cannot introspect a token it has not
// cached, answers 503 to it.
const masDownFault = "MAS emulator down"

// options are the soak's flags.
type options struct {
	bin, hsKind    string
	dur, quiet     time.Duration
	tenants        int
	seed           uint64
	roundtripEvery string
	mas            bool
	masOIDC        int
	faults         []fault
}

// homeserver is what the soak needs of a harness (testenv.Synapse or
// testenv.Dendrite).
type homeserver interface {
	Register(ctx context.Context, user, password string, admin bool) (string, error)
	Login(ctx context.Context, user, password string) (string, error)
	Logout(ctx context.Context, token string) error
	JoinedRooms(ctx context.Context, token string) ([]string, error)
	Pause()
	Resume(ctx context.Context) error
	Stop()
}

func run(o options) (rerr error) {
	bin, hsKind, dur, quiet, tenants, seed, roundtripEvery := o.bin, o.hsKind, o.dur, o.quiet, o.tenants, o.seed, o.roundtripEvery
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "mxprobe-soak-")
	if err != nil {
		return err
	}
	// A failed run keeps mxprobe's log and data (the room journal) for the
	// post-mortem.
	defer func() {
		if rerr == nil {
			os.RemoveAll(dir)
		} else {
			fmt.Printf("mxprobe's log and data kept in %s\n", dir)
		}
	}()
	// The driver's own log (the reverse proxies of the fault proxy and the
	// emulator's front note every request a probe cancelled) goes to a
	// file, so the per-minute table stays readable.
	dlog, err := os.Create(filepath.Join(dir, "driver.log"))
	if err != nil {
		return err
	}
	defer dlog.Close()
	log.SetOutput(dlog)
	defer log.SetOutput(os.Stderr)
	var d homeserver
	var syn *testenv.Synapse
	var emu *masemu.Emulator
	var hsURL, serverName string
	sctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	switch hsKind {
	case "synapse":
		if why := testenv.SynapseAvailable(); why != "" {
			cancel()
			return fmt.Errorf("no Synapse: %s (make tools)", why)
		}
		sopts := testenv.SynapseOptions{Postgres: true, RateLimits: map[string]any{"rc_login": soakLoginLimits()}}
		if o.mas {
			// The emulator's upstream provider keeps production's limit on
			// code exchanges (10 a minute, counted twice): a login budget
			// that let a 6th exchange into a minute would show as 429s.
			if emu, err = masemu.Start(masemu.Options{}); err != nil {
				cancel()
				return err
			}
			defer emu.Close()
			sopts.MAS = emu.SynapseMAS()
		}
		syn, err = testenv.StartSynapse(sctx, sopts)
		if err == nil {
			d, hsURL, serverName = syn, syn.URL, syn.ServerName
			if emu != nil {
				// The tenants reach Synapse through the deployment's
				// reverse proxy (the emulator's Matrix front), which sends
				// login and logout to MAS.
				emu.AttachSynapse(syn)
				hsURL = emu.HomeserverURL
			}
		}
	case "dendrite":
		var den *testenv.Dendrite
		den, err = testenv.StartDendrite(sctx, testenv.DendriteOptions{Dir: filepath.Join(dir, "dendrite")})
		if err == nil {
			d, hsURL, serverName = den, den.URL, den.ServerName
		}
	default:
		err = fmt.Errorf("--homeserver %q: synapse or dendrite", hsKind)
	}
	cancel()
	if err != nil {
		return err
	}
	defer d.Stop()
	directURL := hsURL
	if syn != nil {
		directURL = syn.URL
	}
	proxy, err := faultproxy.New(hsURL)
	if err != nil {
		return err
	}
	defer proxy.Close()
	recv := &receiver{fired: map[string]int{}, resolve: map[string]int{}, rules: map[string]string{}}
	hook := httptest.NewServer(recv)
	defer hook.Close()

	// The accounts: on a homeserver of its own, registered there; behind
	// MAS, MAS users (Synapse registers no one), provisioned at Synapse as
	// MAS does when it creates a user. A mas_oidc bot's platform account is
	// linked to its MAS user as after an earlier login, so the operator can
	// exempt it before the daemon's first login.
	newAcct := func(a acct, oidcTenant string) error {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		switch {
		case emu == nil:
			_, err := d.Register(rctx, a.user, a.pw, false)
			return err
		case oidcTenant != "":
			email := "bot-" + oidcTenant + "@openmeet.net"
			emu.AddUpstreamUser(oidcTenant, email, a.pw, a.login)
			emu.LinkUpstreamUser(oidcTenant, email, 1, a.user)
		default:
			emu.SetMASPassword(a.user, a.pw)
		}
		return emu.ProvisionUser(rctx, a.user)
	}
	var bots []acct
	var ts []map[string]any
	for i := range tenants {
		id := fmt.Sprintf("t%02d", i)
		a := acct{user: fmt.Sprintf("soak-bot-%02d", i), pw: fmt.Sprintf("soak-pw-%02d", i)}
		method, oidcTenant := "password", ""
		switch {
		case emu != nil && i < o.masOIDC:
			// The configuration names the platform's slug of the bot; the
			// provider makes "<slug>_<tenant>" of it, MAS's localpart, which
			// the probes' whoami expects (docs/openmeet.md).
			a.login = "openmeet-bot-" + id
			a.user, method, oidcTenant = masemu.UpstreamLocalpart(a.login, id), "mas_oidc", id
		case emu != nil:
			method = "mas_compat_password"
		}
		if err := newAcct(a, oidcTenant); err != nil {
			return err
		}
		bots = append(bots, a)
		login := a.user
		if a.login != "" {
			login = a.login
		}
		ts = append(ts, map[string]any{"id": id, "homeserver_url": proxy.URL,
			"bot": map[string]any{"method": method, "user": login, "password": a.pw}})
	}
	peer := acct{user: "soak-peer", pw: "soak-peer-pw"}
	peerMethod := "password"
	if emu != nil {
		peerMethod = "mas_compat_password"
	}
	if err := newAcct(peer, ""); err != nil {
		return err
	}
	var adminToken string
	if syn != nil {
		// Operators exempt the bots from Synapse's limits (docs/synapse.md):
		// the admin API's override_ratelimit, one call per account.
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		adminToken, err = adminOf(actx, syn, emu)
		if err == nil {
			err = exemptFromLimits(actx, syn, adminToken, append(bots, peer))
		}
		cancel()
		if err != nil {
			return err
		}
	}
	// The bots are exempted from Synapse's per-user limits (above) and
	// listed so; rc_login cannot be exempted per account: it is raised in
	// homeserver.yaml, as docs/roundtrip.md tells operators of many bots,
	// and stated here, which gives the login budget. Dendrite has none of
	// these limits.
	limits := map[string]any{"disabled": true}
	if syn != nil {
		var exempt []string
		for _, a := range append(bots, peer) {
			exempt = append(exempt, "@"+a.user+":"+serverName)
		}
		limits = map[string]any{"exempt": exempt, "rc_login": soakLoginLimits()}
	}
	cfg := map[string]any{
		"global": map[string]any{"homeserver_url": proxy.URL, "server_name": serverName,
			"data_dir": filepath.Join(dir, "data"), "concurrency": 16,
			// A short run history fills within minutes, so what grows after
			// that is not the (bounded) history.
			"history_size": 10},
		"synapse_limits": limits,
		"tenants":        ts,
		"probes": []map[string]any{
			{"name": "login", "type": "login", "schedule": "@every 20s", "timeout": "10s"},
			{"name": "roundtrip", "type": "roundtrip", "schedule": "@every " + roundtripEvery, "timeout": "15s",
				"roundtrip": map[string]any{"peer": map[string]any{"method": peerMethod, "user": peer.user, "password": peer.pw},
					"sweep_interval": "1m", "sweep_max_age": "1m"}},
		},
		"alerting": map[string]any{
			"evaluation_interval": "5s",
			"rules": []map[string]any{
				{"name": "login_failing", "probe": "login", "failures": 2, "successes": 2},
				{"name": "roundtrip_failing", "probe": "roundtrip", "failures": 2, "successes": 2},
			},
			"notifiers": []map[string]any{{"name": "hook", "type": "webhook", "webhook": map[string]any{"url": hook.URL}}},
		},
	}
	if emu != nil {
		// The deployment's MAS and the platform (docs/openmeet.md); the
		// login budget is the default, 4 full logins in any 60 s.
		cfg["mas"] = map[string]any{"public_url": emu.MASURL, "redirect_uri": "http://localhost:9005/auth/matrix/callback",
			"upstream": map[string]any{"adapter": "openmeet", "api_url": emu.UpstreamURL}}
	}
	b, _ := yaml.Marshal(cfg)
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(bin, "check-config", "--config.file", cfgPath).CombinedOutput(); err != nil {
		return fmt.Errorf("check-config: %v\n%s", err, out)
	}
	port, _ := testenv.FreePort()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(dir, "mxprobe.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--config.file", cfgPath, "--web.listen-address", fmt.Sprintf("127.0.0.1:%d", port), "--log.level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	daemon, err := testenv.StartProc(cmd)
	if err != nil {
		return err
	}
	done := daemon.Done()
	stopDaemon := func() { daemon.Stop(syscall.SIGTERM, 30*time.Second) }
	defer stopDaemon()

	// Dendrite on SQLite can die under this load ("database is locked" is a
	// panic there): a watchdog restarts it on the same port and data, and
	// the report counts the crashes. For mxprobe it is one more fault.
	var restarts atomic.Int64
	var paused atomic.Bool
	wdDone := make(chan struct{})
	defer func() { <-wdDone }()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		defer close(wdDone)
		down := 0
		for sleep(wctx, nil, 2*time.Second) {
			if paused.Load() {
				continue // a restart fault holds it down
			}
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(directURL, "http://"), time.Second)
			if err == nil {
				c.Close()
				down = 0
				continue
			}
			if down++; down < 2 {
				continue
			}
			d.Pause() // reap the dead process
			rctx, cancel := context.WithTimeout(wctx, 90*time.Second)
			err = d.Resume(rctx)
			cancel()
			n := restarts.Add(1)
			fmt.Printf("  homeserver died at %s; restart %d: %v\n", time.Now().Format("15:04:05"), n, errString(err))
			down = 0
		}
	}()

	rng := rand.New(rand.NewPCG(seed, 9))
	fmt.Printf("soak: %s (%s of it with faults), %d tenants, login every 20s, round trip every %s, seed %d\n", dur, dur-quiet, tenants, roundtripEvery, seed)
	if emu != nil {
		fmt.Printf("Synapse delegates its authentication to the MAS emulator: %d bots log in with mas_oidc, %d and the peer with mas_compat_password\n",
			o.masOIDC, tenants-o.masOIDC)
	}
	fmt.Printf("%-6s %10s %10s %8s %9s %9s %8s %8s %8s  %s\n", "minute", "heap MB", "RSS MB", "gorout.", "runs", "failed", "firing", "hs 5xx", "hs 429", "fault this minute")
	hsc := &hsCounters{syn: syn}
	start := time.Now()
	var heaps, gors []float64
	faultEnd := start.Add(dur - quiet)
	for minute := 0; time.Since(start) < dur; minute++ {
		faultName := "-"
		minuteStart := start.Add(time.Duration(minute) * time.Minute)
		if minute > 0 && time.Now().Before(faultEnd) {
			f := o.faults[rng.IntN(len(o.faults))]
			faultName = f.name
			hold := time.Duration(15+rng.IntN(30)) * time.Second
			remove := func() {}
			if f.name == restartFault {
				paused.Store(true)
				d.Pause()
				remove = func() {
					rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
					err := d.Resume(rctx)
					cancel()
					paused.Store(false)
					if err != nil {
						fmt.Printf("  homeserver restart failed: %v\n", err)
					}
				}
			} else if f.name == masDownFault {
				emu.StopMAS()
				remove = func() {
					if err := emu.StartMAS(); err != nil {
						fmt.Printf("  MAS emulator back failed: %v\n", err)
					}
				}
			} else {
				h := proxy.Add(f.rule)
				remove = h.Remove
			}
			if !sleep(ctx, done, min(hold, time.Until(faultEnd))) {
				remove()
				return stopped(ctx, daemon, dir)
			}
			remove()
		}
		if !sleep(ctx, done, time.Until(minuteStart.Add(time.Minute))) {
			return stopped(ctx, daemon, dir)
		}
		m, err := scrape(base + "/metrics")
		if err != nil {
			return err
		}
		heap, gor := m["go_memstats_heap_inuse_bytes"]/1e6, m["go_goroutines"]
		// Growth is judged on the GC's heap goal (the live heap at the
		// last collection × (1 + GOGC/100)): the heap in use is a point on
		// the collector's sawtooth, too noisy for a 10 % bound.
		heaps, gors = append(heaps, m["go_memstats_next_gc_bytes"]/1e6), append(gors, gor)
		e5, e429 := hsc.sample(ctx)
		fmt.Printf("%-6d %10.1f %10.1f %8.0f %9.0f %9.0f %8.0f %8s %8s  %s\n", minute+1, heap, m["process_resident_memory_bytes"]/1e6, gor,
			m["runs"], m["failed"], m["firing"], e5, e429, faultName)
	}

	// The end: stop the daemon (its cleanup runs), then count what is left.
	stopDaemon()
	wcancel()
	<-wdDone
	var left []string
	lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer lcancel()
	for _, a := range append(bots, peer) {
		if syn != nil {
			// Through the admin API: logging every bot in again from one
			// address would meet Synapse's rc_login.address (override_ratelimit
			// does not cover logins).
			rooms, err := adminJoinedRooms(lctx, syn, adminToken, "@"+a.user+":"+serverName)
			if err != nil {
				return err
			}
			for _, r := range rooms {
				left = append(left, a.user+" "+r)
			}
			continue
		}
		tok, err := d.Login(lctx, a.user, a.pw)
		if err != nil {
			return fmt.Errorf("login %s for the room count: %v", a.user, err)
		}
		rooms, err := d.JoinedRooms(lctx, tok)
		if err != nil {
			return err
		}
		for _, r := range rooms {
			left = append(left, a.user+" "+r)
		}
		_ = d.Logout(lctx, tok)
	}
	recv.mu.Lock()
	var ids []string
	for id := range recv.rules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	bad := 0
	for _, id := range ids {
		if recv.fired[id] != 1 || recv.resolve[id] != 1 {
			bad++
			fmt.Printf("alert %s (%s): fired %d, resolved %d\n", id, recv.rules[id], recv.fired[id], recv.resolve[id])
		}
	}
	nFired, nResolved := 0, 0
	for _, id := range ids {
		nFired += recv.fired[id]
		nResolved += recv.resolve[id]
	}
	recv.mu.Unlock()
	growth := func(v []float64) float64 {
		if len(v) < 4 {
			return 0
		}
		early := (v[1] + v[2]) / 2 // after warm-up
		if len(v) >= 12 {
			early = (v[5] + v[6]) / 2 // after the run history has filled
		}
		late := (v[len(v)-1] + v[len(v)-2]) / 2
		return late / early
	}
	fmt.Printf("\nhomeserver crashes (restarted): %d\nrooms left behind: %d\nalert instances: %d (fired notifications %d, resolved %d, not exactly once: %d)\n",
		restarts.Load(), len(left), len(ids), nFired, nResolved, bad)
	if syn != nil {
		fmt.Printf("Synapse's own answers over the soak: %.0f 5xx, %.0f 429 (synapse_http_server_responses_total; the proxy's injected faults are not among them)\n", hsc.total5xx, hsc.total429)
	}
	var masRefused int
	if emu != nil {
		st := emu.Stats()
		masRefused = st.ProviderTokenRateLimited
		fmt.Printf("MAS emulator: %d code exchanges at the upstream provider (%d refused 429), %d platform logins, %d refreshes (%d refused), %d compat logins, %d introspections by Synapse (%d active)\n",
			st.ProviderTokenRequests, st.ProviderTokenRateLimited, st.UpstreamLogins, st.Refreshes, st.RefreshRejected, st.CompatLogins,
			st.Introspections, st.IntrospectionsActive)
	}
	fmt.Printf("heap growth (GC heap goal, last 2 min / minutes 6-7, or 2-3 in short runs): %.2fx; goroutines: %.2fx (limit %.2fx)\n", growth(heaps), growth(gors), maxGrowth)
	for _, l := range left {
		fmt.Println("  left:", l)
	}
	switch {
	case len(left) > 0:
		return fmt.Errorf("%d probe rooms left behind", len(left))
	case bad > 0:
		return fmt.Errorf("%d alerts not fired and resolved exactly once", bad)
	case masRefused > 0:
		return fmt.Errorf("the upstream provider refused %d code exchanges: the MAS login budget let more than it allows into a minute", masRefused)
	case growth(heaps) > maxGrowth || growth(gors) > maxGrowth:
		return fmt.Errorf("heap or goroutines grew by more than %.0f %% after warm-up (log in %s)", (maxGrowth-1)*100, dir)
	}
	return nil
}

// adminOf returns an admin's access token: a registered admin's login, or
// behind MAS the operator's admin compatibility token (mas-cli manage
// issue-compatibility-token --yes-i-want-to-grant-synapse-admin-privileges).
func adminOf(ctx context.Context, s *testenv.Synapse, emu *masemu.Emulator) (string, error) {
	if emu != nil {
		emu.SetMASPassword("soak-admin", "soak-admin-pw")
		return emu.IssueCompatibilityToken(ctx, "soak-admin", true)
	}
	if _, err := s.Register(ctx, "soak-admin", "soak-admin-pw", true); err != nil {
		return "", fmt.Errorf("registering the admin: %w", err)
	}
	return s.Login(ctx, "soak-admin", "soak-admin-pw")
}

// exemptFromLimits exempts each account from Synapse's per-user rate
// limits.
func exemptFromLimits(ctx context.Context, s *testenv.Synapse, adminToken string, accts []acct) error {
	for _, a := range accts {
		if err := s.OverrideRateLimit(ctx, adminToken, "@"+a.user+":"+s.ServerName); err != nil {
			return fmt.Errorf("override_ratelimit %s: %w", a.user, err)
		}
	}
	return nil
}

// adminJoinedRooms lists the rooms a user is joined to (GET
// /_synapse/admin/v1/users/<user_id>/joined_rooms).
func adminJoinedRooms(ctx context.Context, s *testenv.Synapse, adminToken, userID string) ([]string, error) {
	b, err := s.Do(ctx, http.MethodGet, "/_synapse/admin/v1/users/"+url.PathEscape(userID)+"/joined_rooms", adminToken, nil)
	if err != nil {
		return nil, fmt.Errorf("joined rooms of %s: %w", userID, err)
	}
	var out struct {
		Rooms []string `json:"joined_rooms"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("joined rooms of %s: %w", userID, err)
	}
	return out.Rooms, nil
}

// hsCounters follows Synapse's own 5xx and 429 answers across its restarts
// (which reset its counters).
type hsCounters struct {
	syn                *testenv.Synapse
	last5xx, last429   float64
	total5xx, total429 float64
}

// sample returns the minute's increases, or "-" when there is no Synapse or
// it does not answer.
func (h *hsCounters) sample(ctx context.Context) (string, string) {
	if h.syn == nil {
		return "-", "-"
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	page, err := h.syn.Metrics(cctx)
	if err != nil {
		return "-", "-"
	}
	var e5, e429 float64
	for _, line := range strings.Split(string(page), "\n") {
		if !strings.HasPrefix(line, "synapse_http_server_responses_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, `code="429"`):
			e429 += v
		case strings.Contains(line, `code="5`):
			e5 += v
		}
	}
	inc := func(cur float64, last, total *float64) float64 {
		d := cur - *last
		if d < 0 { // restarted: counting from zero again
			d = cur
		}
		*last = cur
		*total += d
		return d
	}
	return fmt.Sprintf("%.0f", inc(e5, &h.last5xx, &h.total5xx)), fmt.Sprintf("%.0f", inc(e429, &h.last429, &h.total429))
}

// stopped says why the soak ended early: a signal to the driver, or the
// daemon's exit (a clean one, after SIGTERM or SIGINT from outside, saves
// its data and says nothing at the soak's log level).
func stopped(ctx context.Context, daemon *testenv.Proc, dir string) error {
	select {
	case <-daemon.Done():
		return fmt.Errorf("mxprobe exited at %s: %v (log in %s)", time.Now().Format("15:04:05"), errString(daemon.Err()), dir)
	default:
	}
	return fmt.Errorf("interrupted at %s: %v (log in %s)", time.Now().Format("15:04:05"), context.Cause(ctx), dir)
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func sleep(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-done:
	}
	return false
}

// scrape reads the few series the report needs from /metrics.
func scrape(u string) (map[string]float64, error) {
	resp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		name := l[:i]
		switch {
		case name == "go_memstats_heap_inuse_bytes", name == "go_memstats_next_gc_bytes", name == "go_goroutines", name == "process_resident_memory_bytes":
			out[name] = v
		case strings.HasPrefix(name, "mxprobe_probe_runs_total{"):
			if !strings.Contains(name, `result="skipped"`) {
				out["runs"] += v
			}
			if strings.Contains(name, `result="failure"`) {
				out["failed"] += v
			}
		case strings.HasPrefix(name, "mxprobe_alerts{") && strings.Contains(name, `state="firing"`):
			out["firing"] += v
		}
	}
	return out, sc.Err()
}
