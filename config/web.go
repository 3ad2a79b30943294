package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// Web defaults.
const (
	DefaultWebTitle      = "mxprobe"
	DefaultSparklineRuns = 30
)

// WebConfig configures the HTTP API and the status page. TLS and basic auth
// for every endpoint come from the exporter-toolkit web config file
// (--web.config.file), not from here.
type WebConfig struct {
	// APIToken (or APITokenFile) is the bearer token the mutating endpoints
	// (run now, silences, /-/reload) and /probe require. Without one they
	// are open. At least MinTokenLength characters.
	APIToken     promcfg.Secret `yaml:"api_token" json:"api_token"`
	APITokenFile string         `yaml:"api_token_file" json:"api_token_file"`
	// ProtectReads makes the read endpoints (results, alerts, silences),
	// the status page and /metrics require the token too. Needs a token.
	ProtectReads bool `yaml:"protect_reads" json:"protect_reads"`
	// MetricsToken (or MetricsTokenFile) is a second bearer token accepted
	// on /metrics only, for Prometheus when protect_reads is on.
	MetricsToken     promcfg.Secret `yaml:"metrics_token" json:"metrics_token"`
	MetricsTokenFile string         `yaml:"metrics_token_file" json:"metrics_token_file"`
	// ProbeAnonymousModules are the probes /probe runs without the token
	// (none by default).
	ProbeAnonymousModules []string `yaml:"probe_anonymous_modules" json:"probe_anonymous_modules,omitempty"`
	// RunFloor is the least time between two fresh runs of one probe and
	// tenant started over HTTP (/probe, run-now); callers in between get the
	// last result. Default 5s.
	RunFloor *Duration `yaml:"run_floor" json:"run_floor,omitempty"`
	// CookieSecure forces the status page cookie's Secure flag; unset, it
	// is set when the browser came over https (directly, or through a
	// trusted proxy's X-Forwarded-Proto).
	CookieSecure *bool `yaml:"cookie_secure" json:"cookie_secure,omitempty"`
	// TrustedProxies are the addresses or CIDR ranges whose
	// X-Forwarded-Proto and X-Forwarded-For are believed.
	TrustedProxies []string `yaml:"trusted_proxies" json:"trusted_proxies,omitempty"`
	// Title is the status page's heading.
	Title string `yaml:"title" json:"title"`
	// SparklineRuns is how many past runs the status page's latency
	// sparkline shows (at most global.history_size).
	SparklineRuns int `yaml:"sparkline_runs" json:"sparkline_runs"`
	// RefreshInterval reloads the status page in the browser; 0 turns it off.
	RefreshInterval *Duration `yaml:"refresh_interval" json:"refresh_interval,omitempty"`

	line int
}

// UnmarshalYAML records the line of the section for validation errors.
func (w *WebConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain WebConfig
	if err := n.Decode((*plain)(w)); err != nil {
		return err
	}
	w.line = n.Line
	return nil
}

// Token resolves the API token ("" when none is configured).
func (w *WebConfig) Token() (string, error) { return Secret(w.APIToken, w.APITokenFile) }

// MinTokenLength is the shortest api_token or metrics_token accepted.
const MinTokenLength = 16

// DefaultRunFloor is web.run_floor's default.
const DefaultRunFloor = Duration(5e9)

// MetricsTokenValue resolves the metrics token ("" when none is configured).
func (w *WebConfig) MetricsTokenValue() (string, error) {
	return Secret(w.MetricsToken, w.MetricsTokenFile)
}

// Floor returns web.run_floor (default 5s).
func (w *WebConfig) Floor() Duration {
	if w.RunFloor == nil {
		return DefaultRunFloor
	}
	return *w.RunFloor
}

// Proxies parses web.trusted_proxies (an address is a /32 or /128 range).
func (w *WebConfig) Proxies() ([]netip.Prefix, error) { return parsePrefixes(w.TrustedProxies) }

// parsePrefixes reads a list of CIDR ranges and addresses (an address is a
// /32 or /128 range; IPv4-mapped IPv6 addresses as IPv4).
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR range", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// Refresh returns the status page refresh interval (default 30s).
func (w *WebConfig) Refresh() Duration {
	if w.RefreshInterval == nil {
		return Duration(30e9)
	}
	return *w.RefreshInterval
}

func applyWebDefaults(c *Config) {
	w := &c.Web
	if w.Title == "" {
		w.Title = DefaultWebTitle
	}
	if w.SparklineRuns == 0 {
		w.SparklineRuns = DefaultSparklineRuns
	}
	if c.Global.HistorySize > 0 && w.SparklineRuns > c.Global.HistorySize {
		w.SparklineRuns = c.Global.HistorySize
	}
}

func (c *Config) webWhere(field string) string {
	if c.Web.line > 0 {
		return fmt.Sprintf("%s:%d: web.%s", c.File, c.Web.line, field)
	}
	return fmt.Sprintf("%s: web.%s", c.File, field)
}

func validateWeb(c *Config) Errors {
	var errs Errors
	w := &c.Web
	add := func(field, format string, args ...any) {
		errs = append(errs, c.webWhere(field)+": "+fmt.Sprintf(format, args...))
	}
	checkToken := func(inline promcfg.Secret, file, field string) {
		if inline != "" && file != "" {
			add(field, "%s and %s_file are mutually exclusive", field, field)
		}
		if file != "" {
			b, err := os.ReadFile(file)
			if err != nil {
				add(field+"_file", "cannot read the token file: %v", err)
				return
			}
			if why := WeakToken(string(bytes.TrimSpace(b))); why != "" {
				add(field+"_file", "the token in %s %s (for example: openssl rand -hex 32 > %s)", file, why, file)
			}
		}
		if inline != "" {
			if why := WeakToken(string(inline)); why != "" {
				add(field, "the token %s (for example: openssl rand -hex 32)", why)
			}
		}
	}
	checkToken(w.APIToken, w.APITokenFile, "api_token")
	checkToken(w.MetricsToken, w.MetricsTokenFile, "metrics_token")
	if (w.MetricsToken != "" || w.MetricsTokenFile != "") && !w.ProtectReads {
		add("metrics_token", "only used with protect_reads: true (without it /metrics is open)")
	}
	if w.RunFloor != nil && *w.RunFloor < 0 {
		add("run_floor", "must not be negative")
	}
	if _, err := w.Proxies(); err != nil {
		add("trusted_proxies", "%v", err)
	}
	for _, m := range w.ProbeAnonymousModules {
		if _, ok := c.Probe(m); !ok {
			add("probe_anonymous_modules", "no probe named %q is configured", m)
		}
	}
	if w.ProtectReads && w.APIToken == "" && w.APITokenFile == "" {
		add("protect_reads", "needs api_token or api_token_file")
	}
	if w.SparklineRuns < 0 {
		add("sparkline_runs", "must be positive")
	}
	if w.RefreshInterval != nil && *w.RefreshInterval < 0 {
		add("refresh_interval", "must not be negative")
	}
	return errs
}
