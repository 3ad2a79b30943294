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

func TestSynapseWorkerTargets(t *testing.T) {
	env := func(string) string { return "" }
	good := `
probes:
  - name: synapse
    type: synapse_metrics
    synapse:
      targets:
        - {name: main, kind: main, url: "http://synapse:9000/_synapse/metrics"}
        - {name: generic1, kind: generic_worker, url: "http://w1:9101/_synapse/metrics"}
      dns: {name: synapse-workers.matrix.svc, port: 9101}
`
	cfg, err := Parse([]byte(good), "m.yml", env)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Probes[0].Synapse
	if s.MinRequests != 20 || s.TopCaches != 5 || s.DNS.Kind != "generic_worker" || s.DNS.Path != "/_synapse/metrics" ||
		s.DNS.Scheme != "http" || s.DNS.MaxProcesses != DefaultSynapseMaxProcesses {
		t.Errorf("defaults not applied: %+v %+v", s, s.DNS)
	}
	if ps := s.Processes(); len(ps) != 2 || ps[1].Name != "generic1" {
		t.Errorf("processes %+v", ps)
	}
	bad := `
probes:
  - name: synapse
    type: synapse_metrics
    synapse:
      url: http://synapse:9000/_synapse/metrics
      min_requests: -1
      targets:
        - {name: main, kind: main, url: "http://a/"}
        - {name: "w:1", kind: generic_worker, url: "http://b/"}
        - {name: w2, kind: genric_worker, url: "ftp://c/"}
        - {name: w2, kind: pusher}
        - {kind: pusher, url: "http://d/"}
      dns: {name: "http://x", port: 0, scheme: gopher, kind: nope, allowed_cidrs: [10.0.0.0/8, pod-range]}
`
	_, err = Parse([]byte(bad), "m.yml", env)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`synapse.min_requests: must not be negative`,
		`synapse.targets[0].name: "main" is already the name of synapse.url`,
		`synapse.targets[1].name: "w:1": use letters, digits`,
		`synapse.targets[2].kind: "genric_worker": one of main, generic_worker`,
		`synapse.targets[2].url: must be an http or https URL`,
		`synapse.targets[3].name: "w2" already names synapse.targets[2]`,
		`synapse.targets[3].url: missing`,
		`synapse.targets[4].name: missing`,
		`synapse.dns.name: "http://x"`,
		`synapse.dns.port: 0`,
		`synapse.dns.scheme: "gopher"`,
		`synapse.dns.kind: "nope"`,
		`synapse.dns.allowed_cidrs: "pod-range" is neither an address nor a CIDR range`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
}
