package main

import (
	"fmt"
	"strings"
	"testing"
)

// twentyTenants is a configuration of 20 tenants, a round trip every
// minute and one shared peer.
func twentyTenants(schedule string) string {
	var b strings.Builder
	b.WriteString("global: {homeserver_url: \"https://matrix.example.org\", server_name: example.org}\ntenants:\n")
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&b, "  - {id: t%d, bot: {method: password, user: bot%d, password: x}}\n", i, i)
	}
	b.WriteString("probes:\n  - name: roundtrip\n    type: roundtrip\n")
	if schedule != "" {
		fmt.Fprintf(&b, "    schedule: %q\n", schedule)
	}
	b.WriteString("    roundtrip: {peer: {user: mxprobe-peer, password: y}}\n  - {name: room_message, type: room_message, room_message: {room_id: \"!r:example.org\"}}\n  - {name: login, type: login}\n")
	return b.String()
}

// Done when 3: check-config names rc_invites.per_user, rc_joins.local and
// rc_message with expected and allowed rates and the fix; --strict fails;
// the default configuration, and 20 tenants on the default schedules,
// report nothing.
func TestCheckConfigRateLimits(t *testing.T) {
	t.Setenv("TENANTS_B64", "")
	cfg := writeFile(t, "twenty.yml", twentyTenants("@every 1m"))
	code, out, errOut := runCLI(t, "check-config", "--config.file", cfg)
	if code != 0 {
		t.Fatalf("without --strict: exit %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{
		"rc_invites.per_user for @mxprobe-peer:example.org: 1200.0/h expected, 10.8/h allowed",
		"rc_joins.local for @mxprobe-peer:example.org: 1200.0/h expected, 360.0/h allowed",
		"rc_message for @mxprobe-peer:example.org: 2400.0/h expected, 720.0/h allowed",
		"rc_room_creation for 20 accounts",
		"override_ratelimit", "tenants[].peer", "rarer",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errOut := runCLI(t, "check-config", "--strict", "--config.file", cfg); code == 0 || !strings.Contains(errOut, "--strict") {
		t.Fatalf("--strict: exit %d, stderr %q", code, errOut)
	}
	for name, content := range map[string]string{
		"default":          "",
		"twenty, defaults": twentyTenants(""),
	} {
		f := writeFile(t, "c.yml", content)
		code, out, errOut := runCLI(t, "check-config", "--strict", "--config.file", f)
		if code != 0 || strings.Contains(out, "rate limit") {
			t.Errorf("%s: exit %d, output %s %s", name, code, out, errOut)
		}
	}
}

// Issue 22, done-when 7: check-config on 20 password tenants sharing one
// peer (default schedules and limits) says how long the first logins of
// all 21 accounts take under rc_login.address (5 per 27m47s: the 21st
// after four windows), and how to shorten it.
func TestCheckConfigTimeToFirstProbe(t *testing.T) {
	t.Setenv("TENANTS_B64", "")
	cfg := writeFile(t, "twenty.yml", twentyTenants(""))
	code, out, errOut := runCLI(t, "check-config", "--config.file", cfg)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	for _, want := range []string{
		"first probe of every tenant: 21 accounts need a full login under rc_login.address (5 per 27m47s)",
		"the last one about 1h51m after a start", "global.data_dir", "raise rc_login.address", "application service",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
