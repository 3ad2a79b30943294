package config

import (
	"bytes"
	"fmt"
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
	// (run now, silences) require. Without one they are open.
	APIToken     promcfg.Secret `yaml:"api_token" json:"api_token"`
	APITokenFile string         `yaml:"api_token_file" json:"api_token_file"`
	// ProtectReads makes the read endpoints (results, alerts, silences) and
	// the status page require the token too. Needs a token.
	ProtectReads bool `yaml:"protect_reads" json:"protect_reads"`
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
	if w.APIToken != "" && w.APITokenFile != "" {
		add("api_token", "api_token and api_token_file are mutually exclusive")
	}
	if w.APITokenFile != "" {
		if b, err := os.ReadFile(w.APITokenFile); err != nil {
			add("api_token_file", "cannot read the token file: %v", err)
		} else if len(bytes.TrimSpace(b)) == 0 {
			add("api_token_file", "the token file %s is empty", w.APITokenFile)
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
