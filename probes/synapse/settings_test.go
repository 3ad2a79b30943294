package synapse

import (
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// parse parses a configuration that knows the synapse_metrics type.
func parse(yml string) (*config.Config, error) {
	return config.Parse([]byte(yml), "m.yml", func(string) string { return "" }, Type().Kind)
}

// settingsOf returns the decoded settings of the configuration's probe i.
func settingsOf(t *testing.T, cfg *config.Config, i int) *Settings {
	t.Helper()
	s, err := probetype.SettingsOf[Settings](&cfg.Probes[i])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSettings(t *testing.T) {
	good := `
probes:
  - name: synapse
    type: synapse_metrics
    synapse:
      url: http://synapse:9000/_synapse/metrics
      basic_auth: {username: prom, password_file: /run/secrets/x}
      servlets: [KeysQueryServlet]
`
	cfg, err := parse(good)
	if err != nil {
		t.Fatal(err)
	}
	s := settingsOf(t, cfg, 0)
	if s.MaxBodyBytes != DefaultMaxBodyBytes || s.Window.D().Seconds() != 15 || s.Thresholds["http_5xx_ratio"].Fail == nil {
		t.Errorf("defaults not applied: %+v", s)
	}
	p := &cfg.Probes[0]
	if p.Schedule.Spec != "@every 30s" || p.Timeout.D() != 10*time.Second || p.PerTenant() {
		t.Errorf("probe defaults: schedule %s, timeout %s, per tenant %v", p.Schedule.Spec, p.Timeout, p.PerTenant())
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
  - name: big
    type: synapse_metrics
    synapse: {url: "http://127.0.0.1:1/_synapse/metrics", max_body_bytes: 1000000000}
`
	_, err = parse(bad)
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
		`m.yml:17: probe "big": synapse.max_body_bytes: 1000000000 is over the cap`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("secret in errors: %s", msg)
	}
	// mxprobe run synapse_metrics without a config: the section comes from --target.
	cfg, err = parse("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.EnsureProbe(TypeSynapseMetrics); err != nil {
		t.Fatalf("EnsureProbe: %v", err)
	}
}

// TestSettingsUnknownKeys: a misspelt key is an error with its line and
// path, at the top and in every section below (a misspelt
// dns.allowed_cidrs must not silently lift the restriction).
func TestSettingsUnknownKeys(t *testing.T) {
	_, err := parse(`
probes:
  - name: synapse
    type: synapse_metrics
    synapse:
      url: http://synapse:9000/_synapse/metrics
      basic_auth: {username: prom, pasword: x}
      targets:
        - {name: w1, kind: generic_worker, url: "http://w1/", knd: pusher}
      dns: {name: synapse-workers.matrix.svc, port: 9101, allowed_cidr: [10.0.0.0/8]}
      thresholds:
        http_5xx_ratio: {warn: 0.01, fial: 0.05}
`)
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, want := range []string{
		`m.yml:7: probe "synapse": synapse.basic_auth.pasword: unknown field`,
		`m.yml:9: probe "synapse": synapse.targets[0].knd: unknown field`,
		`m.yml:10: probe "synapse": synapse.dns.allowed_cidr: unknown field`,
		`m.yml:12: probe "synapse": synapse.thresholds.http_5xx_ratio.fial: unknown field`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
	_, err = parse(`
probes:
  - name: synapse
    type: synapse_metrics
    synapse: {url: "http://synapse:9000/_synapse/metrics", windw: 30s}
`)
	if err == nil || !strings.Contains(err.Error(), `m.yml:5: probe "synapse": synapse.windw: unknown field`) {
		t.Errorf("unknown top-level key: %v", err)
	}
}

func TestSettingsWorkerTargets(t *testing.T) {
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
	cfg, err := parse(good)
	if err != nil {
		t.Fatal(err)
	}
	s := settingsOf(t, cfg, 0)
	if s.MinRequests != 20 || s.TopCaches != 5 || s.DNS.Kind != "generic_worker" || s.DNS.Path != "/_synapse/metrics" ||
		s.DNS.Scheme != "http" || s.DNS.MaxProcesses != DefaultMaxProcesses {
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
	_, err = parse(bad)
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

// TestPrepareRun: `mxprobe run` scrapes twice, --window apart (the
// configured window without it), and its timeout outlasts the window; the
// daemon's prober takes no baseline scrape of its own.
func TestPrepareRun(t *testing.T) {
	cfg, err := parse(`
probes:
  - {name: synapse, type: synapse_metrics, synapse: {url: "http://synapse:9000/_synapse/metrics", window: 40s}}
`)
	if err != nil {
		t.Fatal(err)
	}
	typ := Type()
	p := &cfg.Probes[0]
	in := probetype.Inputs{Name: p.Name, Probe: p, Deps: &probetype.Deps{}}
	probetype.Provide(in.Deps, NewStore())
	pr, err := typ.New(in)
	if err != nil {
		t.Fatal(err)
	}
	if w := pr.(*Probe).Window; w != 0 {
		t.Errorf("daemon prober: window %s, want none", w)
	}
	if err := typ.PrepareRun(cfg, p, probetype.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if pr, _ := typ.New(in); pr.(*Probe).Window != 40*time.Second || p.Timeout.D() != 50*time.Second {
		t.Errorf("configured window: prober window %s, timeout %s; want 40s and 50s", pr.(*Probe).Window, p.Timeout)
	}
	if err := typ.PrepareRun(cfg, p, probetype.RunOptions{Window: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if pr, _ := typ.New(in); pr.(*Probe).Window != 2*time.Minute || p.Timeout.D() != 130*time.Second {
		t.Errorf("--window 2m: prober window %s, timeout %s; want 2m and 2m10s", pr.(*Probe).Window, p.Timeout)
	}
	p.Timeout = config.Duration(time.Hour)
	if err := typ.PrepareRun(cfg, p, probetype.RunOptions{Window: time.Second}); err != nil || p.Timeout.D() != time.Hour {
		t.Errorf("a longer timeout is kept: %s, %v", p.Timeout, err)
	}
	if _, err := typ.New(probetype.Inputs{Name: p.Name, Probe: p}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Errorf("no store provided: %v", err)
	}
}
