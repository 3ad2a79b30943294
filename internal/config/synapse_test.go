package config

import (
	"strings"
	"testing"
)

func TestSynapseConfig(t *testing.T) {
	env := func(string) string { return "" }
	good := `
probes:
  - name: synapse
    type: synapse_metrics
    synapse:
      url: http://synapse:9000/_synapse/metrics
      basic_auth: {username: prom, password_file: /run/secrets/x}
      servlets: [KeysQueryServlet]
`
	cfg, err := Parse([]byte(good), "m.yml", env)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Probes[0].Synapse
	if s.MaxBodyBytes != DefaultSynapseMaxBodyBytes || s.Window.D().Seconds() != 15 || s.Thresholds["http_5xx_ratio"].Fail == nil {
		t.Errorf("defaults not applied: %+v", s)
	}

	bad := `
probes:
  - name: synapse
    type: synapse_metrics
    synapse:
      url: ftp://x
      basic_auth: {password: hunter2-secret}
      bearer_token: tok
      thresholds:
        http_5xx_ratio: {warn: 0.5, fail: 0.1}
        "bad name": {warn: 1}
        db_txn_mean_seconds: {}
  - name: nosection
    type: synapse_metrics
`
	_, err = Parse([]byte(bad), "m.yml", env)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`m.yml:6: probe "synapse": synapse.url: must be an http or https URL`,
		`m.yml:6: probe "synapse": synapse.basic_auth.username: missing`,
		`basic_auth and bearer_token are mutually exclusive`,
		`synapse.thresholds.http_5xx_ratio: warn (0.5) is above fail (0.1)`,
		`invalid signal name "bad name"`,
		`synapse.thresholds.db_txn_mean_seconds: set warn, fail, warn_below or fail_below`,
		`m.yml:13: probe "nosection": synapse.url: missing`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("secret in errors: %s", msg)
	}
	// mxprobe run synapse_metrics without a config: the section comes from --target.
	cfg, err = Parse(nil, "", env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.EnsureProbe(TypeSynapseMetrics); err != nil {
		t.Fatalf("EnsureProbe: %v", err)
	}
}
