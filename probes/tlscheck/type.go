package tlscheck

import (
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
	mxfed "maunium.net/go/mautrix/federation"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/federation"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeTLS is the tls probe type's name.
const TypeTLS = "tls"

// DefaultWarnBefore is how long before a certificate's expiry a run warns
// (the alert of deploy/prometheus fires at the same distance).
const DefaultWarnBefore = 14 * 24 * time.Hour

// Type is the tls probe type: one probe for the deployment, every hour by
// default (certificates change slowly; the expiry metric carries the
// rest); settings under the probe's `tls:` key.
func Type() probetype.Type {
	return probetype.Define(probetype.Def[Settings]{
		Name: TypeTLS, Schedule: "@every 1h", Timeout: 30 * time.Second,
		SettingsKey: "tls",
		Steps:       []string{StepDiscovery, StepHandshake, StepExpiry},
		Classes:     append(probes.SharedClasses(), federation.ClassDiscovery, ClassTLS, ClassHostname, ClassExpired, ClassExpiring),
		Decode:      DecodeSettings,
		New: func(in probetype.Inputs, s *Settings) (probes.Prober, error) {
			return NewProbe(in.Name, s), nil
		},
		Metrics: Metrics,
	})
}

// Settings configure one tls probe.
type Settings struct {
	// Endpoints are checked besides the discovered ones: https URLs or
	// host:port (port 443 when absent).
	Endpoints []string `yaml:"endpoints"`
	// Discover adds the HTTPS endpoints of the configuration (default
	// true): global and tenant homeserver URLs, mas.public_url, the
	// upstream provider's api_url and origin.
	Discover *bool `yaml:"discover"`
	// Federation adds the federation endpoint of each server name (default
	// true), found as the federation probe finds it.
	Federation *bool `yaml:"federation"`
	// ServerNames whose federation endpoints are checked (default:
	// global.server_name and the tenants').
	ServerNames []string `yaml:"server_names"`
	// DNSServer (IP:port) and CAFile: as the federation probe's.
	DNSServer string `yaml:"dns_server"`
	CAFile    string `yaml:"ca_file"`
	// WarnBefore: a run warns (class expiring) when a certificate expires
	// within it (default 14 days).
	WarnBefore config.Duration `yaml:"warn_before"`

	roots     *x509.CertPool
	endpoints []endpoint
}

func (s *Settings) federation() bool { return s.Federation == nil || *s.Federation }

// EndpointLabels lists the labels of the endpoints the probe checks besides
// the federation ones (discovered first, then listed).
func (s *Settings) EndpointLabels() []string {
	out := make([]string, len(s.endpoints))
	for i, e := range s.endpoints {
		out[i] = e.label
	}
	return out
}

// endpoint is one TLS endpoint: its label (host:port), where to connect
// and the name its certificate must hold.
type endpoint struct {
	label string
	addrs []string
	name  string
}

// parseEndpoint reads an https URL or host:port.
func parseEndpoint(s string) (endpoint, error) {
	hostport := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return endpoint{}, err
		}
		if u.Scheme != "https" {
			return endpoint{}, fmt.Errorf("%q: not an https URL", s)
		}
		hostport = u.Host
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), "443"
	}
	if host == "" {
		return endpoint{}, fmt.Errorf("%q: no host", s)
	}
	if strings.ContainsAny(host, " /?#@") {
		return endpoint{}, fmt.Errorf("%q: not a host", s)
	}
	hp := net.JoinHostPort(host, port)
	return endpoint{label: hp, addrs: []string{hp}, name: host}, nil
}

// ConfiguredURLs are the URLs of the configuration mxprobe talks to that
// may be HTTPS endpoints (the tls probe keeps the https ones).
func ConfiguredURLs(cfg *config.Config) []string {
	out := []string{cfg.Global.HomeserverURL}
	for _, t := range cfg.Tenants {
		out = append(out, t.HomeserverURL)
	}
	return append(out, cfg.MAS.PublicURL, cfg.MAS.Upstream.APIURL, cfg.MAS.Upstream.Origin)
}

// DecodeSettings decodes the settings of probe p from n (nil: all
// defaults), applies the defaults and validates them.
func DecodeSettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*Settings, error) {
	s, w, err := probetype.DecodeInto[Settings](cfg, p, n, "tls")
	if err != nil {
		return nil, err
	}
	if s.WarnBefore == 0 {
		s.WarnBefore = config.Duration(DefaultWarnBefore)
	}
	var errs config.Errors
	add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
	seen := map[string]bool{}
	if s.Discover == nil || *s.Discover {
		for _, u := range ConfiguredURLs(cfg) {
			if !strings.HasPrefix(strings.ToLower(u), "https://") {
				continue
			}
			if ep, err := parseEndpoint(u); err == nil && !seen[ep.label] {
				seen[ep.label] = true
				s.endpoints = append(s.endpoints, ep)
			}
		}
	}
	for i, e := range s.Endpoints {
		ep, err := parseEndpoint(e)
		if err != nil {
			add("tls.endpoints[%d]: %v", i, err)
			continue
		}
		if !seen[ep.label] {
			seen[ep.label] = true
			s.endpoints = append(s.endpoints, ep)
		}
	}
	if s.federation() {
		if len(s.ServerNames) == 0 {
			s.ServerNames = federation.DefaultServerNames(cfg)
		}
		for i, name := range s.ServerNames {
			if _, _, ok := mxfed.ParseServerName(name); !ok {
				add("tls.server_names[%d]: %q is not a server name", i, name)
			}
		}
	} else if len(s.ServerNames) > 0 {
		add("tls.server_names: given while federation is false")
	}
	if len(s.endpoints) == 0 && (!s.federation() || len(s.ServerNames) == 0) {
		add("tls: no endpoint to check (list endpoints, or configure https URLs or a server name)")
	}
	if s.DNSServer != "" {
		if err := federation.CheckDNSServer(s.DNSServer); err != nil {
			add("tls.dns_server: %v", err)
		}
	}
	if s.CAFile != "" {
		roots, err := federation.LoadRoots(s.CAFile)
		if err != nil {
			add("tls.ca_file: %v", err)
		}
		s.roots = roots
	}
	if s.WarnBefore < 0 {
		add("tls.warn_before: must be positive")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// Metrics registers mxprobe_tls_cert_not_after_timestamp_seconds and
// returns the observer that sets it from each run's signals. An endpoint
// checked by several tls probes shows the earliest expiry any saw; an
// endpoint no probe checks any more disappears.
func Metrics(reg prometheus.Registerer) (probetype.Observer, error) {
	o := &observer{
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxprobe_tls_cert_not_after_timestamp_seconds",
			Help: "Earliest NotAfter (Unix time) of the certificates the endpoint presented at the last run (as blackbox_exporter's probe_ssl_earliest_cert_expiry).",
		}, []string{"endpoint"}),
		byProbe: map[string]map[string]float64{},
	}
	if err := reg.Register(o.notAfter); err != nil {
		return nil, err
	}
	return o.observe, nil
}

type observer struct {
	mu       sync.Mutex
	notAfter *prometheus.GaugeVec
	byProbe  map[string]map[string]float64 // probe → endpoint → not after
}

func (o *observer) observe(r probes.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := map[string]float64{}
	for name, v := range r.Signals {
		if sig, ep, ok := strings.Cut(name, ":"); ok && sig == SignalNotAfter {
			now[ep] = v
		}
	}
	touched := map[string]bool{}
	for ep := range o.byProbe[r.Probe] {
		touched[ep] = true
	}
	for ep := range now {
		touched[ep] = true
	}
	o.byProbe[r.Probe] = now
	for ep := range touched {
		v, any := math.Inf(1), false
		for _, m := range o.byProbe {
			if x, ok := m[ep]; ok {
				v, any = math.Min(v, x), true
			}
		}
		if any {
			o.notAfter.WithLabelValues(ep).Set(v)
		} else {
			o.notAfter.DeleteLabelValues(ep)
		}
	}
}
