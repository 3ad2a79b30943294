// Package config holds mxprobe's configuration: the YAML schema, strict
// decoding with errors that name file and line, tenants from TENANTS_B64, the
// environment names of the operations guide, and validation.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// Login methods.
const (
	MethodPassword           = "password"
	MethodToken              = "token"
	MethodMASOIDC            = "mas_oidc"
	MethodMASCompatSSO       = "mas_compat_sso"
	MethodMASCompatPassword  = "mas_compat_password"
	DefaultBotEmailDomain    = OpenMeetBotEmailDomain
	DefaultMASScopes         = "openid email"
	defaultConcurrency       = 32
	defaultJitter            = 0.9
	defaultShutdownGraceSecs = 10
)

// Config is the whole configuration.
type Config struct {
	Global   Global         `yaml:"global" json:"global"`
	MAS      MAS            `yaml:"mas" json:"mas"`
	Tenants  []Tenant       `yaml:"tenants" json:"tenants"`
	Probes   []Probe        `yaml:"probes" json:"probes"`
	Alerting AlertingConfig `yaml:"alerting" json:"alerting"`
	Web      WebConfig      `yaml:"web" json:"web"`
	// AppService is the deployment-wide application service (appservice.go).
	AppService AppService `yaml:"appservice" json:"appservice"`
	// TenantOverrides adjust tenants by id, TENANTS_B64 ones above all (overrides.go).
	TenantOverrides map[string]TenantOverride `yaml:"tenant_overrides" json:"tenant_overrides,omitempty"`

	// Skipped lists the TENANTS_B64 entries that cannot be probed (an empty
	// id, no bot): reported, never fatal.
	Skipped []SkippedTenant `yaml:"-" json:"-"`
	// SynapseLimits are the homeserver's rate limits the schedules must fit.
	SynapseLimits SynapseLimits `yaml:"synapse_limits" json:"synapse_limits"`

	// TenantSources says where each tenant came from ("file" or "TENANTS_B64"),
	// by tenant id, for messages.
	TenantSources map[string]string `yaml:"-" json:"-"`
	// File is the path the config was read from, if any.
	File string `yaml:"-" json:"-"`
	// kinds are the probe types registered by the daemon (Kind).
	kinds map[string]Kind
}

// Global settings.
type Global struct {
	// HomeserverURL is the client-server API base URL (env MATRIX_HOMESERVER_URL).
	HomeserverURL string `yaml:"homeserver_url" json:"homeserver_url"`
	// ServerName is the Matrix server name in user ids (env MATRIX_SERVER_NAME).
	ServerName string `yaml:"server_name" json:"server_name"`
	// BotEmailDomain derives bot emails bot-<id>@<domain> (env BOT_EMAIL_DOMAIN).
	BotEmailDomain string `yaml:"bot_email_domain" json:"bot_email_domain"`
	// Concurrency is the global limit of runs in flight.
	Concurrency int `yaml:"concurrency" json:"concurrency"`
	// Jitter is the fraction of a probe's interval over which tenants are spread (0..1).
	Jitter *float64 `yaml:"jitter" json:"jitter"`
	// ShutdownGrace is how long in-flight runs get on SIGTERM before cancellation.
	ShutdownGrace Duration `yaml:"shutdown_grace" json:"shutdown_grace"`
	// DataDir holds state that survives restarts (alert state).
	DataDir string `yaml:"data_dir" json:"data_dir"`
	// ExternalURL is where the status page is reachable, for links in alerts.
	ExternalURL string `yaml:"external_url" json:"external_url"`
	// LoginMethod is the default login method of tenants that name none.
	LoginMethod string `yaml:"login_method" json:"login_method"`
	// HistorySize is how many past runs per probe and tenant are kept in memory.
	HistorySize int `yaml:"history_size" json:"history_size"`
}

// JitterFraction returns the configured jitter with its default.
func (g Global) JitterFraction() float64 {
	if g.Jitter == nil {
		return defaultJitter
	}
	return *g.Jitter
}

// Account is a Matrix account mxprobe logs in as.
type Account struct {
	// Method is the login method: password, token, mas_oidc, mas_compat_sso, mas_compat_password, appservice.
	Method string `yaml:"method" json:"method"`
	// User is the localpart (the platform's bot slug); for method
	// appservice, the user to act as (a localpart or a full user id).
	User string `yaml:"user" json:"user"`
	// MatrixUser is the Matrix user the login must end up as, a localpart or
	// a full user id, when it differs from User: with MAS, the provider's
	// preferred_username becomes the localpart (identity.go).
	MatrixUser string `yaml:"matrix_user" json:"matrix_user,omitempty"`
	// Email is used by upstream (MAS) logins.
	Email string `yaml:"email" json:"email"`
	// Password and PasswordFile: one of them for password and MAS logins.
	Password     promcfg.Secret `yaml:"password" json:"password"`
	PasswordFile string         `yaml:"password_file" json:"password_file"`
	// AccessToken and AccessTokenFile: for method token.
	AccessToken     promcfg.Secret `yaml:"access_token" json:"access_token"`
	AccessTokenFile string         `yaml:"access_token_file" json:"access_token_file"`
	// DisplayName, if set, is checked against the account's profile; MAS
	// logins set it at MAS's display-name step (default: the tenant's name).
	DisplayName string `yaml:"display_name" json:"display_name"`
}

// Tenant is one tenant of the platform and its bot.
type Tenant struct {
	ID            string  `yaml:"id" json:"id"`
	Name          string  `yaml:"name" json:"name"`
	HomeserverURL string  `yaml:"homeserver_url" json:"homeserver_url"`
	ServerName    string  `yaml:"server_name" json:"server_name"`
	Bot           Account `yaml:"bot" json:"bot"`
	// Peer is the second account of round trips (falls back to the
	// roundtrip probe's shared peer).
	Peer *Account `yaml:"peer" json:"peer,omitempty"`
	// RoomID is the persistent room used by room_message probes.
	RoomID string `yaml:"room_id" json:"room_id"`

	line int
}

// UnmarshalYAML records the line of the tenant for later validation errors.
func (t *Tenant) UnmarshalYAML(n *yaml.Node) error {
	type plain Tenant
	if err := n.Decode((*plain)(t)); err != nil {
		return err
	}
	t.line = n.Line
	return nil
}

// Probe is one configured probe: a name (the `probe` label), a type and
// its schedule.
type Probe struct {
	Name     string   `yaml:"name" json:"name"`
	Type     string   `yaml:"type" json:"type"`
	Schedule Schedule `yaml:"schedule" json:"schedule"`
	Timeout  Duration `yaml:"timeout" json:"timeout"`
	// Tenants selects tenants by id; empty means all.
	Tenants []string `yaml:"tenants" json:"tenants,omitempty"`
	// Disabled keeps the probe for on-demand runs but out of the schedule.
	Disabled bool `yaml:"disabled" json:"disabled"`

	// settings are the keys of the probe's YAML mapping that are not part
	// of the common structure above, raw: the settings of probe types that
	// own their schema (see SettingsNode).
	settings map[string]*yaml.Node
	// decoded is what the kind's Decode made of the settings (Settings).
	decoded any

	line int
	// kind is the registered kind of the probe's type, if any.
	kind *Kind
}

// UnmarshalYAML records the line of the probe for later validation errors
// and keeps the keys outside the common structure raw (settings).
func (p *Probe) UnmarshalYAML(n *yaml.Node) error {
	type plain Probe
	if n.Kind == yaml.MappingNode {
		known := yamlKeys(reflect.TypeOf(plain{}))
		common := *n
		common.Content = nil
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if known[k.Value] {
				common.Content = append(common.Content, k, v)
				continue
			}
			if p.settings == nil {
				p.settings = map[string]*yaml.Node{}
			}
			p.settings[k.Value] = v
		}
		n = &common
	}
	if err := n.Decode((*plain)(p)); err != nil {
		return err
	}
	p.line = n.Line
	return nil
}

// PerTenant reports whether the probe runs once per tenant (else once per
// configured target).
func (p *Probe) PerTenant() bool {
	if p.kind != nil {
		return p.kind.PerTenant
	}
	return true
}

// Errors is a list of configuration problems, one per line.
type Errors []string

func (e Errors) Error() string { return strings.Join(e, "\n") }

// Load reads a config file (path may be empty for an all-defaults config),
// adds tenants from TENANTS_B64 and the environment, and validates.
// kinds are the probe types the daemon registers beyond the built-in ones.
func Load(path string, env func(string) string, kinds ...Kind) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, Errors{fmt.Sprintf("%s: %v", path, err)}
		}
	}
	return Parse(data, path, env, kinds...)
}

// Parse decodes and validates a config held in memory. name is used in
// messages (the file path).
func Parse(data []byte, name string, env func(string) string, kinds ...Kind) (*Config, error) {
	if env == nil {
		env = os.Getenv
	}
	if name == "" {
		name = "config"
	}
	cfg := &Config{File: name}
	cfg.setKinds(kinds)
	var errs Errors
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			errs = append(errs, yamlErrors(name, err)...)
		}
	}
	cfg.File = name
	cfg.TenantSources = map[string]string{}
	for _, t := range cfg.Tenants {
		cfg.TenantSources[t.ID] = "file"
	}
	applyEnv(cfg, env)
	explicitMethod := cfg.Global.LoginMethod != ""
	if b64 := env("TENANTS_B64"); strings.TrimSpace(b64) != "" {
		tenants, skipped, terrs := ParseTenantsB64Skipped(b64, cfg.Global.BotEmailDomain)
		errs = append(errs, terrs...)
		cfg.Skipped = skipped
		for _, t := range tenants {
			if src, dup := cfg.TenantSources[t.ID]; dup {
				errs = append(errs, fmt.Sprintf("TENANTS_B64: tenant id %q is also defined in the %s", t.ID, src))
				continue
			}
			cfg.TenantSources[t.ID] = "TENANTS_B64"
			// The platform disables MAS's password login: its bots log in
			// through MAS's OIDC flow when MAS is there.
			if t.Bot.Method == "" && !explicitMethod && cfg.MAS.PublicURL != "" {
				t.Bot.Method = MethodMASOIDC
			}
			cfg.Tenants = append(cfg.Tenants, t)
		}
	}
	errs = append(errs, addAppServiceTenant(cfg)...)
	errs = append(errs, applyOverrides(cfg)...)
	applyDefaults(cfg)
	errs = append(errs, decodeSettings(cfg)...)
	deriveSchedules(cfg)
	errs = append(errs, validate(cfg)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// yamlErrors turns yaml.v3 errors into one "file:line: message" per problem.
func yamlErrors(name string, err error) Errors {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make(Errors, 0, len(te.Errors))
		for _, e := range te.Errors {
			out = append(out, name+":"+strings.TrimPrefix(e, "line "))
		}
		return out
	}
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	if strings.HasPrefix(msg, "line ") {
		return Errors{name + ":" + strings.TrimPrefix(msg, "line ")}
	}
	return Errors{name + ": " + msg}
}

func applyEnv(cfg *Config, env func(string) string) {
	set := func(dst *string, key string) {
		if *dst == "" {
			*dst = strings.TrimSpace(env(key))
		}
	}
	set(&cfg.Global.HomeserverURL, "MATRIX_HOMESERVER_URL")
	set(&cfg.Global.ServerName, "MATRIX_SERVER_NAME")
	set(&cfg.Global.BotEmailDomain, "BOT_EMAIL_DOMAIN")
	set(&cfg.MAS.PublicURL, "MAS_PUBLIC_URL")
	set(&cfg.MAS.PublicURL, "MAS_PUBLIC_BASE")      // the platform's name for it
	set(&cfg.MAS.Upstream.APIURL, "BACKEND_DOMAIN") // the platform API base (openmeet-api)
	set(&cfg.MAS.RedirectURI, "MAS_REDIRECT_URI")
	set(&cfg.MAS.Scopes, "MAS_SCOPES")
	applyAppServiceEnv(cfg, env)
}

func applyDefaults(cfg *Config) {
	g := &cfg.Global
	if g.BotEmailDomain == "" {
		g.BotEmailDomain = DefaultBotEmailDomain
	}
	if g.Concurrency == 0 {
		g.Concurrency = defaultConcurrency
	}
	if g.ShutdownGrace == 0 {
		g.ShutdownGrace = Duration(defaultShutdownGraceSecs * 1e9)
	}
	if g.LoginMethod == "" {
		g.LoginMethod = MethodPassword
	}
	if g.HistorySize == 0 {
		g.HistorySize = 60
	}
	if cfg.MAS.Scopes == "" {
		cfg.MAS.Scopes = DefaultMASScopes
	}
	if cfg.MAS.DiscoveryTTL == 0 {
		cfg.MAS.DiscoveryTTL = Duration(3600e9)
	}
	if cfg.MAS.ClientName == "" {
		cfg.MAS.ClientName = "mxprobe"
	}
	if cfg.MAS.Upstream.Adapter == "" {
		cfg.MAS.Upstream.Adapter = OpenMeetUpstreamAdapter
	}
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if t.Name == "" {
			t.Name = t.ID
		}
		if t.HomeserverURL == "" {
			t.HomeserverURL = g.HomeserverURL
		}
		if t.ServerName == "" {
			t.ServerName = g.ServerName
		}
		if t.Bot.Method == "" {
			t.Bot.Method = g.LoginMethod
		}
		cfg.applyAppServiceAccount(&t.Bot)
		if t.Bot.User == "" && t.ID != "" && t.Bot.Method != MethodAppService {
			t.Bot.User = OpenMeetBotUserPrefix + t.ID
		}
		if t.Bot.Email == "" && t.ID != "" {
			t.Bot.Email = "bot-" + t.ID + "@" + g.BotEmailDomain
		}
		if t.Peer != nil && t.Peer.Method == "" {
			t.Peer.Method = MethodPassword
		}
		t.Bot.Email = strings.ToLower(t.Bot.Email)
		if t.Peer != nil {
			cfg.applyAppServiceAccount(t.Peer)
			t.Peer.Email = strings.ToLower(t.Peer.Email)
		}
	}
	if len(cfg.Probes) == 0 {
		cfg.Probes = cfg.defaultProbes()
	}
	for i := range cfg.Probes {
		p := &cfg.Probes[i]
		if p.Name == "" {
			p.Name = p.Type
		}
		d, known := cfg.kindOf(p.Type)
		if !known {
			d = unknownKind() // reported by validate
		}
		if k, ok := cfg.kinds[p.Type]; ok {
			p.kind = &k
		}
		if p.Schedule.Schedule == nil {
			p.Schedule = cfg.defaultSchedule(d, p)
		}
		if p.Timeout == 0 {
			p.Timeout = Duration(d.Timeout)
		}
	}
	applyMASDefaults(cfg)
	applyMatrixUsers(cfg)
	applyLimitsDefaults(cfg)
	applyAlertingDefaults(cfg)
	applyWebDefaults(cfg)
}

// unknownKind gives a probe of an unknown type a schedule and a timeout,
// so that validate reports the type alone.
func unknownKind() Kind { return Kind{Schedule: "@every 1m", Timeout: 30 * time.Second} }

// defaultSchedule is the schedule of probe p of kind k that names none:
// the kind's (or its DefaultSchedule's); none for a kind whose schedule is
// derived from the limits after decoding (deriveSchedules).
func (c *Config) defaultSchedule(k Kind, p *Probe) Schedule {
	spec := k.Schedule
	if k.DefaultSchedule != nil {
		if s := k.DefaultSchedule(c, p); s != "" {
			spec = s
		}
	}
	if k.DeriveSchedule && spec == k.Schedule {
		return Schedule{}
	}
	s, _ := ParseSchedule(spec)
	return s
}

// defaultProbes are the probes of a configuration that lists none: one of
// each kind marked Default.
func (c *Config) defaultProbes() []Probe {
	var out []Probe
	for _, name := range c.ProbeTypes() {
		if k, _ := c.kindOf(name); k.Default {
			out = append(out, Probe{Name: name, Type: name})
		}
	}
	return out
}

// Tenant returns the tenant with the given id.
func (c *Config) Tenant(id string) (*Tenant, bool) {
	for i := range c.Tenants {
		if c.Tenants[i].ID == id {
			return &c.Tenants[i], true
		}
	}
	return nil, false
}

// Probe returns the probe with the given name.
func (c *Config) Probe(name string) (*Probe, bool) {
	for i := range c.Probes {
		if c.Probes[i].Name == name {
			return &c.Probes[i], true
		}
	}
	return nil, false
}

// Homeservers lists the distinct homeserver URLs of the configuration
// (global, then the tenants'), without a trailing slash.
func (c *Config) Homeservers() []string {
	seen := map[string]bool{}
	var out []string
	add := func(u string) {
		u = strings.TrimRight(u, "/")
		if u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	add(c.Global.HomeserverURL)
	for _, t := range c.Tenants {
		add(t.HomeserverURL)
	}
	return out
}

// TenantMap returns the tenants a probe runs for by id (p nil: every
// tenant): what a per-tenant prober is given instead of the configuration.
func (c *Config) TenantMap(p *Probe) map[string]*Tenant {
	out := map[string]*Tenant{}
	if p == nil {
		for i := range c.Tenants {
			out[c.Tenants[i].ID] = &c.Tenants[i]
		}
		return out
	}
	for _, t := range c.TenantsFor(p) {
		out[t.ID] = t
	}
	return out
}

// TenantsFor returns the tenants a probe runs for.
func (c *Config) TenantsFor(p *Probe) []*Tenant {
	var out []*Tenant
	if len(p.Tenants) == 0 {
		for i := range c.Tenants {
			out = append(out, &c.Tenants[i])
		}
		return out
	}
	for _, id := range p.Tenants {
		if t, ok := c.Tenant(id); ok {
			out = append(out, t)
		}
	}
	return out
}

// Secret resolves an inline secret or the file it names. Whitespace around a
// file's content is trimmed.
func Secret(inline promcfg.Secret, file string) (string, error) {
	if inline != "" {
		return string(inline), nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("reading secret file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// EnsureProbe returns the probe named name; when none is configured but name
// is a probe type, it adds one of that type with default settings (for
// `mxprobe run TYPE` without a config entry).
func (c *Config) EnsureProbe(name string) (*Probe, error) {
	if p, ok := c.Probe(name); ok {
		return p, nil
	}
	d, ok := c.kindOf(name)
	if !ok {
		var names []string
		for _, p := range c.Probes {
			names = append(names, p.Name)
		}
		return nil, fmt.Errorf("unknown probe %q (configured: %s; types: %s)", name, strings.Join(names, ", "), strings.Join(c.ProbeTypes(), ", "))
	}
	p := Probe{Name: name, Type: name, Timeout: Duration(d.Timeout)}
	if k, ok := c.kinds[name]; ok {
		p.kind = &k
	}
	p.Schedule = c.defaultSchedule(d, &p)
	c.Probes = append(c.Probes, p)
	applyLimitsDefaults(c)
	// Its settings are decoded by Decode, once the command line has had
	// its say (`mxprobe run http --target URL` supplies the url).
	return &c.Probes[len(c.Probes)-1], nil
}
