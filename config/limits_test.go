package config

import (
	"fmt"
	"strings"
	"testing"
)

func tenantsYAML(n int, ownPeers bool) string {
	var b strings.Builder
	b.WriteString("global: {homeserver_url: \"https://hs.example\", server_name: example.org}\ntenants:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - {id: t%d, bot: {user: bot%d, password: x}", i, i)
		if ownPeers {
			fmt.Fprintf(&b, ", peer: {user: peer%d, password: y}", i)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func TestSynapseLimitsValidation(t *testing.T) {
	y := tenantsYAML(1, true) + `synapse_limits:
  rc_message: {per_second: -1, burst_count: -2}
  login_budget: {logins: 3}
probes:
  - {name: v, type: versions, login: {full_login_interval: 1h}}
`
	_, err := parse([]byte(y), "c.yml", func(string) string { return "" })
	if err == nil {
		t.Fatal("bad synapse_limits accepted")
	}
	for _, want := range []string{"synapse_limits.rc_message.per_second", "synapse_limits.rc_message.burst_count",
		"synapse_limits.login_budget.window", `c.yml:8: probe "v": login: unknown field for probes of type versions`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
