package config

import (
	"fmt"
	"math"
	"sort"
	"strings"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// DefaultSynapseMaxBodyBytes is the default size limit of a metrics page.
const DefaultSynapseMaxBodyBytes = 32 << 20

// MaxSynapseMaxBodyBytes caps synapse.max_body_bytes: reading and parsing a
// page takes about four times its size in memory.
const MaxSynapseMaxBodyBytes = 128 << 20

// SynapseConfig configures the Synapse metrics probe.
type SynapseConfig struct {
	// URL is the metrics page (/_synapse/metrics, or the metrics listener).
	URL string `yaml:"url" json:"url"`
	// BasicAuth guards the page (optional).
	BasicAuth *SynapseBasicAuth `yaml:"basic_auth" json:"basic_auth,omitempty"`
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
	Window Duration `yaml:"window" json:"window"`
	// Thresholds by signal name ("http_5xx_ratio" or "http_5xx_ratio:RoomSendEventRestServlet").
	// Absent: the default set; given: only these.
	Thresholds map[string]Threshold `yaml:"thresholds" json:"thresholds,omitempty"`

	line int
}

// UnmarshalYAML records the line of the section for validation errors.
func (s *SynapseConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain SynapseConfig
	if err := n.Decode((*plain)(s)); err != nil {
		return err
	}
	s.line = n.Line
	return nil
}

// SynapseBasicAuth is HTTP basic auth for the metrics page.
type SynapseBasicAuth struct {
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

func f64(v float64) *float64 { return &v }

// DefaultSynapseThresholds apply when a probe configures none.
func DefaultSynapseThresholds() map[string]Threshold {
	return map[string]Threshold{
		"http_5xx_ratio":            {Warn: f64(0.01), Fail: f64(0.05)},
		"http_response_p95_seconds": {Warn: f64(2.5), Fail: f64(5)},
		"http_response_p95_seconds:RoomSendEventRestServlet": {Warn: f64(1), Fail: f64(2.5)},
		"db_txn_mean_seconds":                                {Warn: f64(0.05), Fail: f64(0.2)},
		"federation_staging_pdus":                            {Warn: f64(100), Fail: f64(1000)},
	}
}

func applySynapseDefaults(c *Config) {
	for i := range c.Probes {
		p := &c.Probes[i]
		if p.Type == TypeSynapseMetrics && p.Synapse != nil {
			p.Synapse.ApplyDefaults()
		}
	}
}

// ApplyDefaults fills the defaults of a section (for sections built in code,
// such as `mxprobe run synapse_metrics --target URL`).
func (s *SynapseConfig) ApplyDefaults() {
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultSynapseMaxBodyBytes
	}
	if s.Window == 0 {
		s.Window = Duration(15e9)
	}
	if s.Thresholds == nil {
		s.Thresholds = DefaultSynapseThresholds()
	}
}

// ValidateSynapse checks the synapse sections again (after code changed them).
func (c *Config) ValidateSynapse() error {
	if errs := validateSynapse(c); len(errs) > 0 {
		return errs
	}
	return nil
}

func validateSynapse(c *Config) Errors {
	var errs Errors
	for i := range c.Probes {
		p := &c.Probes[i]
		if p.Type != TypeSynapseMetrics {
			if p.Synapse != nil {
				errs = append(errs, fmt.Sprintf("%s: synapse: only for probes of type synapse_metrics", c.synapseWhere(p)))
			}
			continue
		}
		s := p.Synapse
		w := c.synapseWhere(p)
		add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
		if s == nil {
			// A probe added by `mxprobe run` (no line) gets its section from --target.
			if p.line > 0 {
				add("synapse.url: missing (add a synapse: section with the metrics page URL)")
			}
			continue
		}
		if s.URL == "" {
			add("synapse.url: missing (the /_synapse/metrics page, or the metrics listener)")
		} else if err := checkURL(s.URL); err != nil {
			add("synapse.url: %v", err)
		}
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
		if s.MaxBodyBytes > MaxSynapseMaxBodyBytes {
			add("synapse.max_body_bytes: %d is over the cap of %d bytes (128 MiB; parsing needs about four times the page size in memory)", s.MaxBodyBytes, MaxSynapseMaxBodyBytes)
		}
		if s.Window < 0 {
			add("synapse.window: must be positive")
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
	}
	return errs
}

// synapseWhere names the synapse section of a probe, by file:line where known.
func (c *Config) synapseWhere(p *Probe) string {
	if p.Synapse != nil && p.Synapse.line > 0 {
		return fmt.Sprintf("%s:%d: probe %q", c.File, p.Synapse.line, p.Name)
	}
	return c.probeWhere(p)
}
