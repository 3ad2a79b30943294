package httpcheck

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	promcfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeHTTP is the http probe type's name.
const TypeHTTP = "http"

// DefaultMaxBodyBytes is how much of an answer the probe reads by default; a
// longer body is a bad_response.
const DefaultMaxBodyBytes = 1 << 20

// Type is the http probe type: one target for the deployment, checked every
// 30 s by default; its settings live under the probe's `http:` key, and
// `mxprobe run http --target URL` sets their url.
func Type() probetype.Type {
	return probetype.Define(probetype.Def[Settings]{
		Name: TypeHTTP, Schedule: "@every 30s", Timeout: 10 * time.Second,
		SettingsKey: "http",
		TargetField: "url",
		Credentials: []string{"headers", "bearer_token", "bearer_token_file"},
		Steps:       []string{StepRequest, StepStatus, StepBody},
		Classes:     probes.SharedClasses(),
		Decode:      DecodeSettings,
		New: func(in probetype.Inputs, s *Settings) (probes.Prober, error) {
			return &Probe{Name: in.Name, Config: s, HTTP: in.HTTP}, nil
		},
	})
}

// Settings configure one http probe: one request, its status and
// optionally its body checked. OpenMeet's health endpoints answer 200 with
// {"status":"error"} when a check fails (health.controller.ts catches the
// failure), so a json check of status is what tells healthy from not.
type Settings struct {
	// URL to request (http or https).
	URL string `yaml:"url"`
	// Method is GET by default.
	Method string `yaml:"method"`
	// Headers are sent with the request (x-tenant-id, Accept, ...).
	Headers map[string]string `yaml:"headers"`
	// Body is sent with the request (with Content-Type from Headers).
	Body string `yaml:"body"`
	// BearerToken / BearerTokenFile: an Authorization: Bearer token (optional).
	BearerToken     promcfg.Secret `yaml:"bearer_token"`
	BearerTokenFile string         `yaml:"bearer_token_file"`
	// ExpectedStatus lists the accepted statuses (default: any 2xx).
	ExpectedStatus []int `yaml:"expected_status"`
	// JSON checks fields of a JSON body: a dotted path ("status",
	// "info.matrix.status", "items.0.id") and the value it must have,
	// compared as text ("ok", "true", "3").
	JSON []JSONCheck `yaml:"json"`
	// BodyRegex must match the body (RE2 syntax).
	BodyRegex string `yaml:"body_regex"`
	// FollowRedirects follows up to 10 redirects; off by default, so a
	// redirect is judged like any other status.
	FollowRedirects bool `yaml:"follow_redirects"`
	// MaxBodyBytes limits how much of the body is read (default 1 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`

	// bodyRE is BodyRegex compiled (by DecodeSettings).
	bodyRE *regexp.Regexp
}

// JSONCheck is one field check of an http probe.
type JSONCheck struct {
	Path   string `yaml:"path"`
	Equals string `yaml:"equals"`
}

// StatusOK reports whether status is accepted.
func (h *Settings) StatusOK(status int) bool {
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

var httpToken = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// DecodeSettings decodes the settings of probe p from n (its `http:` node;
// nil when absent), applies the defaults and validates them; errors name
// the file, the line and the field.
func DecodeSettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*Settings, error) {
	w := cfg.ProbeWhere(p)
	if n == nil {
		return nil, fmt.Errorf("%s: http.url: missing (add an http: section with the URL to request, or pass --target URL to mxprobe run)", w)
	}
	where := func(line int) string { return fmt.Sprintf("%s:%d: probe %q", cfg.File, line, p.Name) }
	if n.Line > 0 {
		w = where(n.Line)
	}
	h := &Settings{}
	if err := probetype.DecodeStrict(n, "http", h, where); err != nil {
		return nil, err
	}
	if h.Method == "" {
		h.Method = http.MethodGet
	}
	h.Method = strings.ToUpper(h.Method)
	if h.MaxBodyBytes == 0 {
		h.MaxBodyBytes = DefaultMaxBodyBytes
	}
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
	if h.URL == "" {
		add("http.url: missing")
	} else if err := config.CheckURL(h.URL); err != nil {
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
		h.bodyRE = re
	}
	if h.BearerToken != "" && h.BearerTokenFile != "" {
		add("http: bearer_token and bearer_token_file are mutually exclusive")
	}
	if h.MaxBodyBytes < 0 {
		add("http.max_body_bytes: must be positive")
	}
	if len(errs) > 0 {
		return nil, config.Errors(errs)
	}
	return h, nil
}
