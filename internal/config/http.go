package config

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// DefaultHTTPMaxBodyBytes is how much of an answer the http probe reads by
// default; a longer body is a bad_response.
const DefaultHTTPMaxBodyBytes = 1 << 20

// HTTPConfig configures a probe of type http: one request, its status and
// optionally its body checked. OpenMeet's health endpoints answer 200 with
// {"status":"error"} when a check fails (health.controller.ts catches the
// failure), so a json check of status is what tells healthy from not.
type HTTPConfig struct {
	// URL to request (http or https).
	URL string `yaml:"url" json:"url"`
	// Method is GET by default.
	Method string `yaml:"method" json:"method"`
	// Headers are sent with the request (x-tenant-id, Accept, ...).
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// Body is sent with the request (with Content-Type from Headers).
	Body string `yaml:"body" json:"body,omitempty"`
	// BearerToken / BearerTokenFile: an Authorization: Bearer token (optional).
	BearerToken     promcfg.Secret `yaml:"bearer_token" json:"bearer_token,omitempty"`
	BearerTokenFile string         `yaml:"bearer_token_file" json:"bearer_token_file,omitempty"`
	// ExpectedStatus lists the accepted statuses (default: any 2xx).
	ExpectedStatus []int `yaml:"expected_status" json:"expected_status,omitempty"`
	// JSON checks fields of a JSON body: a dotted path ("status",
	// "info.matrix.status", "items.0.id") and the value it must have,
	// compared as text ("ok", "true", "3").
	JSON []HTTPJSONCheck `yaml:"json" json:"json,omitempty"`
	// BodyRegex must match the body (RE2 syntax).
	BodyRegex string `yaml:"body_regex" json:"body_regex,omitempty"`
	// FollowRedirects follows up to 10 redirects; off by default, so a
	// redirect is judged like any other status.
	FollowRedirects bool `yaml:"follow_redirects" json:"follow_redirects"`
	// MaxBodyBytes limits how much of the body is read (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes"`

	// BodyRE is BodyRegex compiled (by validation).
	BodyRE *regexp.Regexp `yaml:"-" json:"-"`
	line   int
}

// HTTPJSONCheck is one field check of an http probe.
type HTTPJSONCheck struct {
	Path   string `yaml:"path" json:"path"`
	Equals string `yaml:"equals" json:"equals"`
}

// UnmarshalYAML records the line of the section for validation errors.
func (h *HTTPConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain HTTPConfig
	if err := n.Decode((*plain)(h)); err != nil {
		return err
	}
	h.line = n.Line
	return nil
}

// ApplyDefaults fills the defaults of a section.
func (h *HTTPConfig) ApplyDefaults() {
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	h.Method = strings.ToUpper(h.Method)
	if h.MaxBodyBytes == 0 {
		h.MaxBodyBytes = DefaultHTTPMaxBodyBytes
	}
}

// StatusOK reports whether status is accepted.
func (h *HTTPConfig) StatusOK(status int) bool {
	if len(h.ExpectedStatus) == 0 {
		return status/100 == 2
	}
	for _, s := range h.ExpectedStatus {
		if s == status {
			return true
		}
	}
	return false
}

func applyHTTPDefaults(c *Config) {
	for i := range c.Probes {
		if p := &c.Probes[i]; p.Type == TypeHTTP && p.HTTP != nil {
			p.HTTP.ApplyDefaults()
		}
	}
}

var httpToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func validateHTTP(c *Config) Errors {
	var errs Errors
	for i := range c.Probes {
		p := &c.Probes[i]
		w := c.probeWhere(p)
		if p.HTTP != nil && p.HTTP.line > 0 {
			w = fmt.Sprintf("%s:%d: probe %q", c.File, p.HTTP.line, p.Name)
		}
		add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
		if p.Type != TypeHTTP {
			if p.HTTP != nil {
				add("http: only for probes of type http")
			}
			continue
		}
		h := p.HTTP
		if h == nil {
			add("http.url: missing (add an http: section with the URL to request)")
			continue
		}
		if h.URL == "" {
			add("http.url: missing")
		} else if err := checkURL(h.URL); err != nil {
			add("http.url: %v", err)
		}
		if !httpToken.MatchString(h.Method) {
			add("http.method: %q is not an HTTP method", h.Method)
		}
		for k, v := range h.Headers {
			if !httpToken.MatchString(k) {
				add("http.headers: %q is not a header name", k)
			}
			if strings.ContainsAny(v, "\r\n") {
				add("http.headers.%s: must be one line", k)
			}
		}
		for _, s := range h.ExpectedStatus {
			if s < 100 || s > 599 {
				add("http.expected_status: %d is not an HTTP status", s)
			}
		}
		for j, jc := range h.JSON {
			if jc.Path == "" || strings.HasPrefix(jc.Path, ".") || strings.HasSuffix(jc.Path, ".") || strings.Contains(jc.Path, "..") {
				add("http.json[%d].path: a dotted path such as status or info.matrix.status", j)
			}
		}
		if h.BodyRegex != "" {
			re, err := regexp.Compile(h.BodyRegex)
			if err != nil {
				add("http.body_regex: %v", err)
			}
			h.BodyRE = re
		}
		if h.BearerToken != "" && h.BearerTokenFile != "" {
			add("http: bearer_token and bearer_token_file are mutually exclusive")
		}
		if h.MaxBodyBytes < 0 {
			add("http.max_body_bytes: must be positive")
		}
	}
	return errs
}

// ValidateHTTP checks the http sections again (after code changed them,
// such as `mxprobe run http --target URL`).
func (c *Config) ValidateHTTP() error {
	if errs := validateHTTP(c); len(errs) > 0 {
		return errs
	}
	return nil
}
