package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
	"github.com/mxprobe/mxprobe/probes/shard"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

// TestProbeTypeSettingsErrors: a probe type of the probetype shape
// (room_message) decodes and validates its own settings, with the field and
// the line; a key no part of the probe's type reads is an error, for every
// type (it used to be ignored silently).
func TestProbeTypeSettingsErrors(t *testing.T) {
	cfg := writeFile(t, "c.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, bot: {user: bot, password: pw}}
probes:
  - name: rm
    type: room_message
    room_message:
      room_id: "not-a-room"
      min_power_level: 150
  - {name: rm2, type: room_message, room_message: {room_id: "!r:example.org", bogus: 1}}
`)
	code, out, errOut := runCLI(t, "check-config", "--config.file", cfg)
	if code != 1 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		`c.yml:8: probe "rm": room_message.room_id: "not-a-room" is not a room id`,
		`room_message.min_power_level: 150 is outside 0..100`,
		// Every probe's problems at once, not the first probe's only.
		`c.yml:10: probe "rm2": room_message.bogus: unknown field`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	cfg = writeFile(t, "d.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, room_id: "!r:example.org", bot: {user: bot, password: pw}}
probes:
  - {name: rm, type: room_message, room_message: {bogus: 1}}
`)
	if code, _, errOut := runCLI(t, "check-config", "--config.file", cfg); code != 1 || !strings.Contains(errOut, `d.yml:5: probe "rm": room_message.bogus: unknown field`) {
		t.Errorf("unknown settings field: exit %d\n%s", code, errOut)
	}
	cfg = writeFile(t, "e.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
probes:
  - name: v
    type: versions
    room_message: {room_id: "!r:example.org"}
`)
	if code, _, errOut := runCLI(t, "check-config", "--config.file", cfg); code != 1 || !strings.Contains(errOut, `e.yml:5: probe "v": room_message: unknown field for probes of type versions`) {
		t.Errorf("settings of another type: exit %d\n%s", code, errOut)
	}
	// A valid one passes.
	cfg = writeFile(t, "f.yml", `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, bot: {user: bot, password: pw}}
probes:
  - {name: rm, type: room_message, room_message: {room_id: "!r:example.org", join: false}}
`)
	if code, out, errOut := runCLI(t, "check-config", "--config.file", cfg); code != 0 {
		t.Errorf("valid room_message: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestNewProbeTypeIsOneValue: a probe type is one probetype.Type value plus
// its line in the registry. Everything else follows from the value: the
// configuration accepts the type with its defaults (schedule, timeout, per
// tenant), its settings are decoded and checked by the type, the rate-limit
// check counts what its runs send, the daemon registers its metrics, and
// its jobs run what its constructor built.
func TestNewProbeTypeIsOneValue(t *testing.T) {
	type echoSettings struct {
		Greeting string `yaml:"greeting"`
	}
	greeted := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxprobe_echo_greetings_total", Help: "Test."}, []string{"tenant"})
	echo := probetype.Define(probetype.Def[echoSettings]{
		Name: "echo", PerTenant: true, Schedule: "@every 7m", Timeout: 3 * time.Second,
		SettingsKey: "echo",
		Steps:       []string{"echo"},
		Classes:     []probes.Class{probes.ClassConfig},
		Decode: func(cfg *config.Config, p *config.Probe, n *yaml.Node) (*echoSettings, error) {
			s := &echoSettings{}
			if n != nil {
				if err := probetype.DecodeStrict(n, "echo", s, func(line int) string { return fmt.Sprintf("%s:%d: probe %q", cfg.File, line, p.Name) }); err != nil {
					return nil, err
				}
			}
			if s.Greeting == "" {
				return nil, fmt.Errorf("%s: echo.greeting: missing", cfg.ProbeWhere(p))
			}
			return s, nil
		},
		New: func(in probetype.Inputs, s *echoSettings) (probes.Prober, error) {
			return probes.ProberFunc(func(_ context.Context, tenant string) probes.Result {
				rec := probes.NewRecorder(in.Name, "echo", tenant)
				if _, ok := in.Tenants[tenant]; !ok {
					rec.AddStep("echo", 0, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant))
				} else {
					rec.AddStep("echo", 0, nil)
					rec.Note(s.Greeting + " " + tenant)
				}
				return rec.Finish()
			}), nil
		},
		// 200 events per run from the bot, and a room for each.
		Costs: func(_ *config.Config, _ *config.Probe, _ *echoSettings, t *config.Tenant) []config.Cost {
			return []config.Cost{{Limiter: "rc_message", Account: t.Bot.User, N: 200}, {Limiter: "rc_room_creation", Account: t.Bot.User, N: 1}}
		},
		Metrics: func(reg prometheus.Registerer) (probetype.Observer, error) {
			if err := reg.Register(greeted); err != nil {
				return nil, err
			}
			return func(r probes.Result) {
				if r.Outcome == probes.OutcomeSuccess {
					greeted.WithLabelValues(r.Tenant).Inc()
				}
			}, nil
		},
	})
	types := probeTypes()
	types["echo"] = fromType(echo) // the registry line
	e := &env{logger: discard(), shard: shard.Shard{Index: 0, Count: 1}, types: types}
	noEnv := func(string) string { return "" }
	yml := `global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}
tenants:
  - {id: a, bot: {user: bot_a, password: pw}}
  - {id: b, bot: {user: bot_b, password: pw}}
probes:
  - {name: hello, type: echo, echo: {greeting: hi}}
`
	if _, err := config.Parse([]byte(yml), "c.yml", noEnv, (&env{}).kinds()...); err == nil || !strings.Contains(err.Error(), `unknown probe type "echo"`) {
		t.Fatalf("a type outside the registry: %v", err)
	}
	cfg, err := config.Parse([]byte(yml), "c.yml", noEnv, e.kinds()...)
	if err != nil {
		t.Fatal(err)
	}
	st := newStores(&http.Client{}, noEnv)
	rt, err := assembleProbes(cfg, e, st)
	if err != nil {
		t.Fatal(err)
	}
	j := rt.jobs[0]
	now := time.Now()
	if iv := j.Schedule.Next(now).Sub(now); iv < 6*time.Minute || iv > 7*time.Minute || j.Timeout != 3*time.Second ||
		strings.Join(j.Subjects, ",") != "a,b" || j.Type != "echo" {
		t.Errorf("job %+v (next run in %s), want the type's defaults, per tenant", j, iv)
	}
	if r := j.Prober.Run(context.Background(), "b"); r.Outcome != probes.OutcomeSuccess || len(r.Steps) != 1 || r.Steps[0].Detail != "hi b" {
		t.Errorf("run: %+v", r)
	}
	var found bool
	for _, f := range config.CheckBudget(cfg) {
		found = found || (f.Limiter == "rc_message" && strings.Contains(f.Fix, "hello") && f.Expected > 1700 && f.Expected < 1720)
	}
	if !found {
		t.Errorf("rate-limit check does not count the type's messages (200 per 7 min, 1714/h): %v", config.CheckBudget(cfg))
	}
	m := metrics.New()
	if err := types["echo"].metrics(m); err != nil {
		t.Fatal(err)
	}
	r := j.Prober.Run(context.Background(), "a")
	if err := probetype.CheckResult(echo, r); err != nil {
		t.Error(err)
	}
	m.Observe(r)
	if v := testutil.ToFloat64(greeted.WithLabelValues("a")); v != 1 {
		t.Errorf("per-result metrics: %v greetings of a after one run", v)
	}
	if n, err := testutil.GatherAndCount(m.Registry, "mxprobe_echo_greetings_total"); err != nil || n != 1 {
		t.Errorf("type metrics: %d series, %v", n, err)
	}
	bad := strings.Replace(yml, "{greeting: hi}", "{}", 1)
	_, err = config.Parse([]byte(bad), "c.yml", noEnv, e.kinds()...)
	if err == nil || !strings.Contains(err.Error(), `c.yml:6: probe "hello": echo.greeting: missing`) {
		t.Errorf("settings error: %v", err)
	}
}

// TestRegistryIsConsistent: every registry entry is keyed by its type's
// name, and the kinds the configuration learns from it have a valid default
// schedule and a positive default timeout (a slip here would surface as a
// confusing configuration error in front of an operator).
func TestRegistryIsConsistent(t *testing.T) {
	kinds := 0
	for name, pt := range probeTypes() {
		if pt.build == nil {
			t.Errorf("%s: no constructor", name)
		}
		k := pt.kind
		if k == nil {
			continue
		}
		kinds++
		if k.Name != name {
			t.Errorf("registry key %q holds type %q", name, k.Name)
		}
		if _, err := config.ParseSchedule(k.Schedule); err != nil || k.Schedule == "" {
			t.Errorf("%s: default schedule %q: %v", name, k.Schedule, err)
		}
		if k.Timeout <= 0 {
			t.Errorf("%s: default timeout %s", name, k.Timeout)
		}
	}
	if kinds < 2 {
		t.Errorf("%d types of the probetype shape, want room_message and http at least", kinds)
	}
}

// TestTargetKeepsOtherSettings: `mxprobe run TYPE --target X` sets the
// type's target field and keeps the other settings, also when the settings
// are an alias of an anchored mapping.
func TestTargetKeepsOtherSettings(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("base: &b {url: http://old, method: POST}\nhttp: *b\n"), &doc); err != nil {
		t.Fatal(err)
	}
	aliased := doc.Content[0].Content[3]
	var got struct{ URL, Method string }
	if err := withField(aliased, "url", "http://new").Decode(&got); err != nil || got.URL != "http://new" || got.Method != "POST" {
		t.Errorf("aliased settings: %+v, %v", got, err)
	}
	got.Method = ""
	if err := withField(nil, "url", "http://new").Decode(&got); err != nil || got.URL != "http://new" || got.Method != "" {
		t.Errorf("no settings: %+v, %v", got, err)
	}
	if base := doc.Content[0].Content[1]; len(base.Content) != 4 || base.Content[1].Value != "http://old" {
		t.Errorf("the anchored mapping changed: %v", base.Content)
	}
}

// TestTargetDropsCredentialsForAnotherOrigin: `mxprobe run http --target`
// and `run synapse_metrics --target` send the configured headers, tokens and
// basic auth only when the target keeps the configured origin; a target on
// another port gets none of them.
func TestTargetDropsCredentialsForAnotherOrigin(t *testing.T) {
	type hit struct{ server, key, auth string }
	var (
		mu   sync.Mutex
		hits []hit
	)
	server := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits = append(hits, hit{name, r.Header.Get("X-Api-Key"), r.Header.Get("Authorization")})
			mu.Unlock()
		}))
		t.Cleanup(s.Close)
		return s
	}
	configured, other := server("configured"), server("other")
	cfg := writeFile(t, "mx.yml", fmt.Sprintf(`probes:
  - name: health
    type: http
    http:
      <<: {headers: {X-Api-Key: key-SECRET-5678}}
      url: %[1]s/health
      bearer_token: tok-SECRET-1234
  - name: metrics
    type: synapse_metrics
    synapse: {url: %[1]s/_synapse/metrics, bearer_token: tok-SECRET-1234}
  - name: metrics-basic
    type: synapse_metrics
    synapse: {url: %[1]s/_synapse/metrics, basic_auth: {username: prom, password: pw-SECRET-9012}}
`, configured.URL))
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("prom:pw-SECRET-9012"))
	for _, c := range []struct {
		probe, target string
		creds         bool
	}{
		{"health", other.URL + "/health", false},
		{"health", configured.URL + "/elsewhere", true},
		{"metrics", other.URL + "/_synapse/metrics", false},
		{"metrics", configured.URL + "/_synapse/metrics", true},
		{"metrics-basic", other.URL + "/_synapse/metrics", false},
		{"metrics-basic", configured.URL + "/_synapse/metrics", true},
	} {
		wantAuth := "Bearer tok-SECRET-1234"
		if c.probe == "metrics-basic" {
			wantAuth = basic
		}
		mu.Lock()
		hits = nil
		mu.Unlock()
		runCLI(t, "run", c.probe, "--config.file", cfg, "--target", c.target, "--window", "1ms")
		mu.Lock()
		seen := hits
		mu.Unlock()
		if len(seen) == 0 {
			t.Fatalf("%s --target %s: no request", c.probe, c.target)
		}
		for _, h := range seen {
			if want := map[bool]string{true: "configured", false: "other"}[c.creds]; h.server != want {
				t.Errorf("%s --target %s: request to %s", c.probe, c.target, h.server)
			}
			got := h.auth != "" || h.key != ""
			if got != c.creds || (c.creds && h.auth != wantAuth) || (c.creds && c.probe == "health" && h.key != "key-SECRET-5678") {
				t.Errorf("%s --target %s: X-Api-Key %q, Authorization %q (credentials expected: %v)", c.probe, c.target, h.key, h.auth, c.creds)
			}
		}
	}
}

// TestSynapseGaugesInTheDaemonSink: the registry's synapse_metrics entry
// registers the mxprobe_synapse_* gauges on the daemon's sink, which feeds
// them the type's Results (and only those).
func TestSynapseGaugesInTheDaemonSink(t *testing.T) {
	m := metrics.New()
	if err := probeTypes()[synapse.TypeSynapseMetrics].metrics(m); err != nil {
		t.Fatal(err)
	}
	ok := []probes.Step{{Name: synapse.StepScrape, OK: true}, {Name: synapse.StepParse, OK: true}}
	m.Observe(probes.Result{Probe: "other", Type: "http", Outcome: probes.OutcomeSuccess, Steps: ok,
		Signals: map[string]float64{"http_5xx_ratio": 1}})
	if n, err := testutil.GatherAndCount(m.Registry, "mxprobe_synapse_up", "mxprobe_synapse_http_5xx_ratio"); err != nil || n != 0 {
		t.Errorf("a Result of another type: %d series, %v", n, err)
	}
	m.Observe(probes.Result{Probe: "synapse", Type: synapse.TypeSynapseMetrics, Outcome: probes.OutcomeSuccess, Steps: ok,
		Signals: map[string]float64{"http_5xx_ratio": 0.02}})
	if n, err := testutil.GatherAndCount(m.Registry, "mxprobe_synapse_up", "mxprobe_synapse_http_5xx_ratio"); err != nil || n != 2 {
		t.Errorf("a synapse_metrics Result: %d series, %v", n, err)
	}
}
