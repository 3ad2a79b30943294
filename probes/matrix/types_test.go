package matrix

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

func testHTTP(t *testing.T) *http.Client {
	c := mxclient.NewHTTPClient()
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func parseTypes(y string) (*config.Config, error) {
	return config.Parse([]byte(y), "c.yml", func(string) string { return "" },
		VersionsType().Kind, RoundtripType().Kind, RoomMessageType().Kind)
}

// TestVersionsRunsAreDeclared: the versions type builds its prober from
// the configuration's homeservers, and its runs (a real homeserver, none
// configured, an unreachable one) report only declared steps and classes.
func TestVersionsRunsAreDeclared(t *testing.T) {
	s := testenv.SharedSynapse(t)
	typ := VersionsType()
	cfg, err := parseTypes(fmt.Sprintf("global: {homeserver_url: %q}\n", s.URL+"/"))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := cfg.Probe(TypeVersions)
	if !ok || p.PerTenant() || p.Schedule.Spec != "@every 30s" || p.Timeout.D() != 10*time.Second {
		t.Fatalf("the default versions probe: %+v", p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, hss := range [][]string{cfg.Homeservers(), nil, {"http://127.0.0.1:1"}} {
		pr, err := typ.New(probetype.Inputs{Name: p.Name, Probe: p, Homeservers: hss, HTTP: testHTTP(t)})
		if err != nil {
			t.Fatal(err)
		}
		r := pr.Run(ctx, "")
		if err := probetype.CheckResult(typ, r); err != nil {
			t.Errorf("homeservers %v: %v", hss, err)
		}
		if ok := r.Outcome == probes.OutcomeSuccess; ok != (len(hss) == 1 && hss[0] == s.URL) {
			t.Errorf("homeservers %v: %s %+v", hss, r.Outcome, r.Steps)
		}
	}
}

// TestRoundtripSettingsDefaults: the round trip's settings get their
// defaults, the journal lives in data_dir, and the schedule is derived.
func TestRoundtripSettingsDefaults(t *testing.T) {
	dir := t.TempDir()
	cfg, err := parseTypes(fmt.Sprintf(`global: {homeserver_url: "https://hs.example", server_name: example.org, data_dir: %q}
tenants:
  - {id: a, bot: {user: bot-a, password: x}}
probes:
  - {name: rt, type: roundtrip, roundtrip: {peer: {user: peer, password: y}}}
`, dir))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Probe("rt")
	s, err := probetype.SettingsOf[RoundtripSettings](p)
	if err != nil {
		t.Fatal(err)
	}
	if s.MinPower() != DefaultMinPowerLevel || s.RoomNamePrefix != DefaultRoomNamePrefix || s.SyncTimeout.D() != 10*time.Second ||
		s.CleanupTimeout.D() != 10*time.Second || s.SweepMaxAge.D() != 15*time.Minute || s.SweepInterval.D() != time.Hour ||
		s.Peer.Method != config.MethodPassword || s.JournalDir != filepath.Join(dir, "rooms") {
		t.Errorf("settings %+v", s)
	}
	if p.Schedule.Spec != "@every 10m" || p.Timeout.D() != time.Minute {
		t.Errorf("schedule %q timeout %s", p.Schedule.Spec, p.Timeout)
	}
}

// TestRoundtripSettingsErrors: every problem of a round trip's settings
// at once, each with the file, the line and the field.
func TestRoundtripSettingsErrors(t *testing.T) {
	_, err := parseTypes(`global: {homeserver_url: "https://hs.example", server_name: example.org}
tenants:
  - {id: a, bot: {user: bot-a, password: x}}
  - {id: b, bot: {user: bot-b, password: x}, peer: {user: bot-b, password: y}}
probes:
  - name: rt
    tenants: [a]
    type: roundtrip
    roundtrip: {min_power_level: 150, sweep_max_age: 30s}
  - name: rt2
    type: roundtrip
    roundtrip:
      peer: {user: shared}
  - {name: rt3, type: roundtrip, roundtrip: {bogus: 1}}
`)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`c.yml:9: probe "rt": roundtrip.min_power_level: 150 is outside 0..100`,
		`c.yml:9: probe "rt": roundtrip.sweep_max_age: 30s is shorter than timeout + cleanup_timeout (1m10s)`,
		`c.yml:9: probe "rt": roundtrip.peer: missing, and tenant "a" has no peer of its own`,
		`c.yml:13: probe "rt2": roundtrip.peer.password: missing (or password_file)`,
		`c.yml:13: probe "rt2": tenant "b": the peer must be another account than the bot ("bot-b")`,
		`c.yml:14: probe "rt3": roundtrip.bogus: unknown field`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}

// TestRoundtripCosts: one round trip as Synapse counts it, the peer's
// invites exempted by the bot's override.
func TestRoundtripCosts(t *testing.T) {
	cfg, err := parseTypes(`global: {homeserver_url: "https://hs.example", server_name: example.org}
tenants:
  - {id: a, bot: {user: bot-a, password: x}}
  - {id: b, bot: {user: bot-b, password: x}, peer: {method: token, access_token: t}}
probes:
  - {name: rt, type: roundtrip, roundtrip: {peer: {user: shared, password: y}}}
`)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Probe("rt")
	typ := RoundtripType()
	for _, tc := range []struct{ tenant, want string }{
		{"a", "rc_message bot-a 4, rc_room_creation bot-a 1, rc_invites.per_issuer bot-a 1, rc_invites.per_user shared 1 (bot-a), rc_joins.local shared 1, rc_message shared 2"},
		{"b", "rc_message bot-b 4, rc_room_creation bot-b 1, rc_invites.per_issuer bot-b 1, rc_invites.per_user peer-of-b 1 (bot-b), rc_joins.local peer-of-b 1, rc_message peer-of-b 2"},
	} {
		tn, _ := cfg.Tenant(tc.tenant)
		var got []string
		for _, c := range typ.Costs(cfg, p, tn) {
			s := fmt.Sprintf("%s %s %g", c.Limiter, c.Account, c.N)
			if c.ExemptAs != "" {
				s += " (" + c.ExemptAs + ")"
			}
			got = append(got, s)
		}
		if g := strings.Join(got, ", "); g != tc.want {
			t.Errorf("tenant %s: %s\nwant %s", tc.tenant, g, tc.want)
		}
		if acc := typ.Accounts(cfg, p, tn); len(acc) != 1 || (tc.tenant == "a" && acc[0].User != "shared") {
			t.Errorf("tenant %s: accounts %v", tc.tenant, acc)
		}
	}
}
