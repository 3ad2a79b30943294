package matrix

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

type simClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *simClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *simClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Done when 2: 20 tenants on the default schedules (room_message, round
// trip, login; a peer per tenant) run behind Synapse's limiter with its
// defaults for 30 limiter-minutes (injected clock; runs are spread over
// each interval as the scheduler spreads them) and meet no 429. The bots
// and peers use access tokens (as the platform's bots do behind MAS, where
// Synapse's rc_login does not apply); password logins under rc_login are
// covered by the login budget's own test.
func TestTwentyTenantsDefaultSchedulesWithinLimits(t *testing.T) {
	d := &testenv.SharedDendrite(t).Homeserver
	clk := &simClock{t: time.Unix(1_800_000_000, 0)}
	lim := testenv.Limited(t, d, synlimit.Options{Now: clk.Now, Pause: -1})
	const tenants = 20
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A persistent room for room_message, which the bots join on their first run.
	owner, ownerPW := d.User(t, "room-owner")
	tok, err := d.Login(ctx, owner, ownerPW)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Do(ctx, "POST", "/_matrix/client/v3/createRoom", tok, []byte(`{"preset":"public_chat","name":"persistent"}`))
	if err != nil {
		t.Fatal(err)
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := jsonUnmarshal(b, &room); err != nil {
		t.Fatal(err)
	}
	var y strings.Builder
	fmt.Fprintf(&y, "global: {homeserver_url: %q, server_name: %q}\ntenants:\n", lim.URL, d.ServerName)
	for i := 0; i < tenants; i++ {
		var toks, users [2]string
		for j, role := range []string{"bot", "peer"} {
			users[j] = fmt.Sprintf("%s%d-%s", role, i, newNonce()[:6])
			toks[j], err = d.Register(ctx, users[j], "pw-"+users[j], false)
			if err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&y, "  - {id: t%02d, room_id: %q, bot: {method: token, user: %s, access_token: %q}, peer: {method: token, user: %s, access_token: %q}}\n",
			i, room.RoomID, users[0], toks[0], users[1], toks[1])
	}
	y.WriteString("probes:\n  - {name: roundtrip, type: roundtrip}\n  - {name: room_message, type: room_message}\n  - {name: login, type: login}\n")
	cfg, err := config.Parse([]byte(y.String()), "twenty.yml", func(string) string { return "" }, RoomMessageType().Kind, RoundtripType().Kind, auth.LoginType().Kind)
	if err != nil {
		t.Fatal(err)
	}
	if f := config.CheckBudget(cfg); len(f) > 0 {
		t.Fatalf("the default schedules exceed a limit: %v", f)
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	m := auth.NewManager(httpc)
	m.Instance = "twenty"

	type event struct {
		at     time.Duration
		probe  probes.Prober
		name   string
		tenant string
	}
	var events []event
	const span = 30 * time.Minute
	for i := range cfg.Probes {
		p := &cfg.Probes[i]
		var pr probes.Prober
		switch p.Type {
		case TypeRoundtrip:
			s, err := probetype.SettingsOf[RoundtripSettings](p)
			if err != nil {
				t.Fatal(err)
			}
			pr = &RoundtripProbe{Name: p.Name, Manager: m, Tenants: cfg.TenantMap(nil), Settings: s}
		case TypeRoomMessage:
			s, err := DecodeRoomMessageSettings(cfg, p, p.SettingsNode("room_message"))
			if err != nil {
				t.Fatal(err)
			}
			pr = &RoomMessageProbe{Name: p.Name, Manager: m, Tenants: cfg.TenantMap(nil), Settings: s}
		case auth.TypeLogin:
			s, err := probetype.SettingsOf[auth.LoginSettings](p)
			if err != nil {
				t.Fatal(err)
			}
			pr = &auth.LoginProbe{Name: p.Name, Manager: m, Tenants: cfg.TenantMap(nil), FullLoginInterval: s.FullLoginInterval.D()}
		}
		iv := p.Schedule.Interval(clk.Now())
		t.Logf("%s: every %s", p.Name, iv)
		for k, tn := range cfg.TenantsFor(p) {
			// The scheduler spreads tenants over jitter (0.9) × the interval.
			off := time.Duration(float64(iv) * cfg.Global.JitterFraction() * float64(k) / tenants)
			for at := off; at < span; at += iv {
				events = append(events, event{at, pr, p.Name, tn.ID})
			}
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at < events[j].at })
	start := clk.Now()
	// Events of one 5 s slot run together at the slot's start time.
	var failures []string
	runs := map[string]int{}
	took := map[string]time.Duration{}
	for i := 0; i < len(events); {
		slot := events[i].at.Truncate(5 * time.Second)
		clk.Set(start.Add(slot))
		var wg sync.WaitGroup
		var mu sync.Mutex
		sem := make(chan struct{}, 20)
		for ; i < len(events) && events[i].at.Truncate(5*time.Second) == slot; i++ {
			ev := events[i]
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
				r := ev.probe.Run(rctx, ev.tenant)
				rcancel()
				mu.Lock()
				defer mu.Unlock()
				runs[ev.name]++
				took[ev.name] += r.Duration
				if r.Outcome != probes.OutcomeSuccess {
					failures = append(failures, fmt.Sprintf("%s/%s at %s: %s %s at %s: %s", ev.name, ev.tenant, slot, r.Outcome, r.Class, r.FailedStep, r.Error))
				}
			}()
		}
		wg.Wait()
	}
	t.Logf("runs in 30 limiter-minutes: %v (run time %v); limiter allowed %v", runs, took, lim.Allowed())
	testenv.NoRefusals(t, lim)
	for _, f := range failures {
		t.Error(f)
	}
	if runs["room_message"] != tenants*30 || runs["roundtrip"] != tenants*3 {
		t.Errorf("runs %v, want 600 room_message and 60 round trips", runs)
	}
}
