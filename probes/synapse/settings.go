package synapse

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// DefaultMaxBodyBytes is the default size limit of a metrics page.
const DefaultMaxBodyBytes = 32 << 20

// MaxMaxBodyBytes caps synapse.max_body_bytes: reading and parsing a page
// takes about four times its size in memory.
const MaxMaxBodyBytes = 128 << 20

// DefaultWindow is the time between the two scrapes of `mxprobe run`.
const DefaultWindow = 15 * time.Second

// DefaultMaxProcesses bounds the addresses of a DNS target.
const DefaultMaxProcesses = 32

// MaxTargets bounds the listed targets.
const MaxTargets = 64

// Settings configure one synapse_metrics probe (the probe's `synapse:`
// key).
type Settings struct {
	// URL is the metrics page (/_synapse/metrics, or the metrics listener)
	// of a single-process Synapse. A worker deployment lists Targets or DNS
	// instead (or as well).
	URL string `yaml:"url" json:"url,omitempty"`
	// Targets are the processes of a worker deployment, each with its own
	// metrics listener.
	Targets []Target `yaml:"targets" json:"targets,omitempty"`
	// DNS names a set of processes by one DNS name (a Kubernetes headless
	// Service): every address it resolves to is scraped.
	DNS *DNS `yaml:"dns" json:"dns,omitempty"`
	// MinRequests: a ratio over fewer requests in the window is not judged
	// (default 20).
	MinRequests int `yaml:"min_requests" json:"min_requests"`
	// TopCaches: hit ratios are reported for this many caches, the most
	// looked-up in the window (default 5).
	TopCaches int `yaml:"top_caches" json:"top_caches"`
	// BasicAuth guards the page (optional).
	BasicAuth *BasicAuth `yaml:"basic_auth" json:"basic_auth,omitempty"`
	// BearerToken / BearerTokenFile: an Authorization: Bearer token (optional).
	BearerToken     promcfg.Secret `yaml:"bearer_token" json:"bearer_token,omitempty"`
	BearerTokenFile string         `yaml:"bearer_token_file" json:"bearer_token_file,omitempty"`
	// MaxBodyBytes limits the page size; a bigger page is a bad_response.
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes"`
	// Servlets are added to the default servlets that get per-servlet signals.
	Servlets []string `yaml:"servlets" json:"servlets,omitempty"`
	// LongPollServlets are judged on finite buckets only (default SyncRestServlet, EventStreamRestServlet).
	LongPollServlets []string `yaml:"long_poll_servlets" json:"long_poll_servlets,omitempty"`
	// Window is the time between the two scrapes of `mxprobe run` (default 15s).
	Window config.Duration `yaml:"window" json:"window"`
	// Thresholds by signal name ("http_5xx_ratio" or "http_5xx_ratio:RoomSendEventRestServlet").
	// Absent: the default set; given: only these.
	Thresholds map[string]Threshold `yaml:"thresholds" json:"thresholds,omitempty"`

	// runWindow, set for `mxprobe run` only (PrepareRun), makes a run
	// without a previous scrape take a baseline scrape and wait this long
	// before the real one; the daemon keeps its baseline across runs.
	runWindow time.Duration
}

// Target is one Synapse process.
type Target struct {
	// Name is the worker name (worker_name in its config; "main" for the
	// main process): the bounded `worker` label of the breakdown.
	Name string `yaml:"name" json:"name"`
	// Kind is its role: one of WorkerKinds.
	Kind string `yaml:"kind" json:"kind"`
	// URL is its metrics page.
	URL string `yaml:"url" json:"url"`
}

// DNS resolves a name to the processes behind it.
type DNS struct {
	// Name resolves to one address per process (A/AAAA records).
	Name string `yaml:"name" json:"name"`
	// Port of the metrics listener.
	Port int `yaml:"port" json:"port"`
	// Scheme (http or https, default http) and Path (default
	// /_synapse/metrics) of the page.
	Scheme string `yaml:"scheme" json:"scheme,omitempty"`
	Path   string `yaml:"path" json:"path,omitempty"`
	// Kind of every process behind the name (default generic_worker).
	Kind string `yaml:"kind" json:"kind,omitempty"`
	// MaxProcesses bounds how many addresses are scraped (default 32): the
	// worker label stays bounded whatever the DNS answers.
	MaxProcesses int `yaml:"max_processes" json:"max_processes"`
	// AllowedCIDRs are the ranges the DNS answer's addresses must fall in
	// (a cluster's pod range). Whatever the DNS says, the probe's
	// credentials (basic_auth, bearer_token) go only over https, to
	// loopback, or to an address in these ranges; with ranges set, an
	// address outside them is an error even without credentials.
	AllowedCIDRs []string `yaml:"allowed_cidrs" json:"allowed_cidrs,omitempty"`
}

// Allowed parses allowed_cidrs (an address is a /32 or /128 range).
func (d *DNS) Allowed() ([]netip.Prefix, error) { return config.ParsePrefixes(d.AllowedCIDRs) }

// BasicAuth is HTTP basic auth for the metrics page.
type BasicAuth struct {
	Username     string         `yaml:"username" json:"username"`
	Password     promcfg.Secret `yaml:"password" json:"password,omitempty"`
	PasswordFile string         `yaml:"password_file" json:"password_file,omitempty"`
}

// Threshold turns a signal into warn / fail. Above Warn or Fail, or below
// WarnBelow or FailBelow.
type Threshold struct {
	Warn      *float64 `yaml:"warn" json:"warn,omitempty"`
	Fail      *float64 `yaml:"fail" json:"fail,omitempty"`
	WarnBelow *float64 `yaml:"warn_below" json:"warn_below,omitempty"`
	FailBelow *float64 `yaml:"fail_below" json:"fail_below,omitempty"`
}

// WorkerKinds are the process roles a target may name: the main process
// and the worker types of Synapse's docs/workers.md (a generic_worker
// configured as a stream writer, federation sender, ... may be named by
// that role).
func WorkerKinds() []string {
	return []string{
		"main", "generic_worker", "event_persister", "federation_sender", "federation_reader", "federation_inbound",
		"media_repository", "pusher", "appservice", "background_worker", "user_dir", "synchrotron", "client_reader",
		"event_creator", "stream_writer", "presence_writer", "typing_writer", "to_device_writer", "account_data_writer",
		"receipts_writer", "device_lists_writer", "push_rules_writer", "frontend_proxy",
	}
}

// Processes lists the configured processes: URL (as "main"), then Targets.
// DNS ones are resolved at run time.
func (s *Settings) Processes() []Target {
	var out []Target
	if s.URL != "" {
		out = append(out, Target{Name: "main", Kind: "main", URL: s.URL})
	}
	return append(out, s.Targets...)
}

func f64(v float64) *float64 { return &v }

// DefaultThresholds apply when a probe configures none.
func DefaultThresholds() map[string]Threshold {
	return map[string]Threshold{
		"http_5xx_ratio":            {Warn: f64(0.01), Fail: f64(0.05)},
		"http_response_p95_seconds": {Warn: f64(2.5), Fail: f64(5)},
		"http_response_p95_seconds:RoomSendEventRestServlet": {Warn: f64(1), Fail: f64(2.5)},
		// Initial and full-state syncs are slow by nature (seconds for a big
		// account); 10 s is the top bucket of Synapse's histogram.
		"http_response_p95_seconds:SyncRestServlet:initial_sync":    {Warn: f64(9.5)},
		"http_response_p95_seconds:SyncRestServlet:full_state_sync": {Warn: f64(9.5)},
		"db_txn_mean_seconds":               {Warn: f64(0.05), Fail: f64(0.2)},
		"federation_staging_pdus":           {Warn: f64(100), Fail: f64(1000)},
		"federation_staging_oldest_seconds": {Warn: f64(60), Fail: f64(300)},
		"event_processing_lag_events":       {Warn: f64(1000), Fail: f64(10000)},
		"event_processing_lag_p95_seconds":  {Warn: f64(10), Fail: f64(60)},
		"federation_send_queue_pdus":        {Warn: f64(1000), Fail: f64(10000)},
		"federation_send_queue_edus":        {Warn: f64(1000), Fail: f64(10000)},
		"reactor_last_seen_seconds":         {Warn: f64(2), Fail: f64(10)},
		"reactor_tick_p99_seconds":          {Warn: f64(0.5), Fail: f64(2)},
		"push_failure_ratio":                {Warn: f64(0.1), Fail: f64(0.5)},
	}
}

// ApplyDefaults fills the defaults of the settings (DecodeSettings does;
// also for settings built in code, by tests).
func (s *Settings) ApplyDefaults() {
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.Window == 0 {
		s.Window = config.Duration(DefaultWindow)
	}
	if s.Thresholds == nil {
		s.Thresholds = DefaultThresholds()
	}
	if s.MinRequests == 0 {
		s.MinRequests = DefaultMinRequests
	}
	if s.TopCaches == 0 {
		s.TopCaches = DefaultTopCaches
	}
	if d := s.DNS; d != nil {
		if d.Scheme == "" {
			d.Scheme = "http"
		}
		if d.Path == "" {
			d.Path = "/_synapse/metrics"
		}
		if d.Kind == "" {
			d.Kind = "generic_worker"
		}
		if d.MaxProcesses == 0 {
			d.MaxProcesses = DefaultMaxProcesses
		}
	}
}

// DecodeSettings decodes the settings of probe p from n (its `synapse:`
// node; nil when absent), applies the defaults and validates them; errors
// name the file, the line and the field, one per line.
func DecodeSettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*Settings, error) {
	w := cfg.ProbeWhere(p)
	if n == nil {
		return nil, fmt.Errorf("%s: synapse.url: missing (add a synapse: section with the metrics page URL, or pass --target URL to mxprobe run)", w)
	}
	where := func(line int) string { return fmt.Sprintf("%s:%d: probe %q", cfg.File, line, p.Name) }
	if n.Line > 0 {
		w = where(n.Line)
	}
	s := &Settings{}
	if err := probetype.DecodeStrict(n, "synapse", s, where); err != nil {
		return nil, err
	}
	if errs := checkNestedKeys(n, where); len(errs) > 0 {
		return nil, errs
	}
	s.ApplyDefaults()
	if errs := s.validate(w); len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// checkNestedKeys refuses unknown keys in the sections under synapse:
// (DecodeStrict checks the top level only), naming the key's line and its
// path, so a misspelt dns.allowed_cidrs is an error rather than no
// restriction at all.
func checkNestedKeys(n *yaml.Node, where func(line int) string) config.Errors {
	var errs config.Errors
	check := func(m *yaml.Node, path string, t reflect.Type) {
		entries, err := probetype.Entries(m)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %s: %v", where(m.Line), path, err))
			return
		}
		known := config.YAMLKeys(t)
		for _, e := range entries {
			if !known[e[0].Value] {
				errs = append(errs, fmt.Sprintf("%s: %s.%s: unknown field", where(e[0].Line), path, e[0].Value))
			}
		}
	}
	top, err := probetype.Entries(n)
	if err != nil {
		return config.Errors{fmt.Sprintf("%s: synapse: %v", where(n.Line), err)}
	}
	for _, e := range top {
		v := probetype.Resolve(e[1])
		switch e[0].Value {
		case "basic_auth":
			check(v, "synapse.basic_auth", reflect.TypeFor[BasicAuth]())
		case "dns":
			check(v, "synapse.dns", reflect.TypeFor[DNS]())
		case "targets":
			if v.Kind == yaml.SequenceNode {
				for i, t := range v.Content {
					check(t, fmt.Sprintf("synapse.targets[%d]", i), reflect.TypeFor[Target]())
				}
			}
		case "thresholds":
			th, err := probetype.Entries(v)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: synapse.thresholds: %v", where(v.Line), err))
				continue
			}
			for _, t := range th {
				check(t[1], "synapse.thresholds."+t[0].Value, reflect.TypeFor[Threshold]())
			}
		}
	}
	return errs
}

// validate checks decoded settings; w names the section ("file:line:
// probe \"x\"").
func (s *Settings) validate(w string) config.Errors {
	var errs config.Errors
	add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
	if s.URL == "" && len(s.Targets) == 0 && s.DNS == nil {
		add("synapse.url: missing (the /_synapse/metrics page, or the metrics listener; for workers, synapse.targets or synapse.dns)")
	} else if s.URL != "" {
		if err := config.CheckURL(s.URL); err != nil {
			add("synapse.url: %v", err)
		}
	}
	s.validateTargets(add)
	if s.BasicAuth != nil {
		if s.BasicAuth.Username == "" {
			add("synapse.basic_auth.username: missing")
		}
		if s.BasicAuth.Password != "" && s.BasicAuth.PasswordFile != "" {
			add("synapse.basic_auth: password and password_file are mutually exclusive")
		}
		if s.BearerToken != "" || s.BearerTokenFile != "" {
			add("synapse: basic_auth and bearer_token are mutually exclusive")
		}
	}
	if s.BearerToken != "" && s.BearerTokenFile != "" {
		add("synapse: bearer_token and bearer_token_file are mutually exclusive")
	}
	if s.MaxBodyBytes < 0 {
		add("synapse.max_body_bytes: must be positive")
	}
	if s.MaxBodyBytes > MaxMaxBodyBytes {
		add("synapse.max_body_bytes: %d is over the cap of %d bytes (128 MiB; parsing needs about four times the page size in memory)", s.MaxBodyBytes, MaxMaxBodyBytes)
	}
	if s.Window < 0 {
		add("synapse.window: must be positive")
	}
	if s.MinRequests < 0 {
		add("synapse.min_requests: must not be negative")
	}
	if s.TopCaches < 0 || s.TopCaches > 50 {
		add("synapse.top_caches: must be between 1 and 50")
	}
	for _, list := range [][]string{s.Servlets, s.LongPollServlets} {
		for _, sv := range list {
			if sv == "" || strings.ContainsAny(sv, ": \t\n") {
				add("synapse: invalid servlet name %q", sv)
			}
		}
	}
	names := make([]string, 0, len(s.Thresholds))
	for k := range s.Thresholds {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t := s.Thresholds[k]
		base, _, _ := strings.Cut(k, ":")
		if base == "" || strings.ContainsAny(k, " \t\n") {
			add("synapse.thresholds: invalid signal name %q", k)
			continue
		}
		if t.Warn == nil && t.Fail == nil && t.WarnBelow == nil && t.FailBelow == nil {
			add("synapse.thresholds.%s: set warn, fail, warn_below or fail_below", k)
		}
		for _, v := range []*float64{t.Warn, t.Fail, t.WarnBelow, t.FailBelow} {
			if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
				add("synapse.thresholds.%s: limits must be finite numbers", k)
				break
			}
		}
		if t.Warn != nil && t.Fail != nil && *t.Warn > *t.Fail {
			add("synapse.thresholds.%s: warn (%g) is above fail (%g)", k, *t.Warn, *t.Fail)
		}
		if t.WarnBelow != nil && t.FailBelow != nil && *t.WarnBelow < *t.FailBelow {
			add("synapse.thresholds.%s: warn_below (%g) is below fail_below (%g)", k, *t.WarnBelow, *t.FailBelow)
		}
	}
	return errs
}

// validateTargets checks targets and dns; names must be unique and usable
// as label values (no ':'), kinds known.
func (s *Settings) validateTargets(add func(string, ...any)) {
	kinds := WorkerKinds()
	if len(s.Targets) > MaxTargets {
		add("synapse.targets: %d targets, at most %d", len(s.Targets), MaxTargets)
	}
	seen := map[string]int{}
	if s.URL != "" {
		seen["main"] = -1
	}
	for i, t := range s.Targets {
		w := fmt.Sprintf("synapse.targets[%d]", i)
		switch {
		case t.Name == "":
			add("%s.name: missing (the worker name, or main)", w)
		case !validWorkerName(t.Name):
			add("%s.name: %q: use letters, digits, '.', '-' and '_' (at most 64)", w, t.Name)
		default:
			if j, dup := seen[t.Name]; dup {
				if j < 0 {
					add("%s.name: %q is already the name of synapse.url", w, t.Name)
				} else {
					add("%s.name: %q already names synapse.targets[%d]", w, t.Name, j)
				}
			}
			seen[t.Name] = i
		}
		if !slices.Contains(kinds, t.Kind) {
			add("%s.kind: %q: one of %s", w, t.Kind, strings.Join(kinds, ", "))
		}
		if t.URL == "" {
			add("%s.url: missing (the metrics listener of this process)", w)
		} else if err := config.CheckURL(t.URL); err != nil {
			add("%s.url: %v", w, err)
		}
	}
	if d := s.DNS; d != nil {
		if d.Name == "" || strings.ContainsAny(d.Name, "/:@ \t") {
			add("synapse.dns.name: %q: a DNS name (a headless Service such as synapse-workers.matrix.svc)", d.Name)
		}
		if d.Port < 1 || d.Port > 65535 {
			add("synapse.dns.port: %d: the metrics listener's port, 1 to 65535", d.Port)
		}
		if d.Scheme != "" && d.Scheme != "http" && d.Scheme != "https" {
			add("synapse.dns.scheme: %q: http or https", d.Scheme)
		}
		if d.Path != "" && !strings.HasPrefix(d.Path, "/") {
			add("synapse.dns.path: %q: must start with /", d.Path)
		}
		if d.Kind != "" && !slices.Contains(kinds, d.Kind) {
			add("synapse.dns.kind: %q: one of %s", d.Kind, strings.Join(kinds, ", "))
		}
		if _, err := d.Allowed(); err != nil {
			add("synapse.dns.allowed_cidrs: %v", err)
		}
		if d.MaxProcesses < 0 || d.MaxProcesses > MaxTargets {
			add("synapse.dns.max_processes: %d: between 1 and %d", d.MaxProcesses, MaxTargets)
		}
	}
}

func validWorkerName(n string) bool {
	if len(n) > 64 {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
