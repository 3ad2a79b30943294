package federation

import (
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
	mxfed "maunium.net/go/mautrix/federation"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeFederation is the federation probe type's name.
const TypeFederation = "federation"

// Type is the federation probe type: one probe for the deployment, every
// 5 minutes by default, checking each of its server names (by default the
// configuration's own: global.server_name and the tenants'); settings under
// the probe's `federation:` key.
func Type() probetype.Type {
	return probetype.Define(probetype.Def[Settings]{
		Name: TypeFederation, Schedule: "@every 5m", Timeout: 30 * time.Second,
		SettingsKey: "federation",
		Steps:       AllSteps(),
		Classes:     Classes(),
		Decode:      DecodeSettings,
		New: func(in probetype.Inputs, s *Settings) (probes.Prober, error) {
			return NewProbe(in.Name, s), nil
		},
		Metrics: Metrics,
	})
}

// Settings configure one federation probe.
type Settings struct {
	// ServerNames to check (default: global.server_name and the tenants'
	// server names).
	ServerNames []string `yaml:"server_names"`
	// DNSServer (IP:port) answers every DNS question of the probe (default:
	// the system's resolver).
	DNSServer string `yaml:"dns_server"`
	// CAFile (PEM) holds the only roots trusted (default: the system's).
	CAFile string `yaml:"ca_file"`
	// Notary (optional) is a server name asked for each server's keys
	// (POST /_matrix/key/v2/query): it must serve the same keys, signed.
	Notary string `yaml:"notary"`

	roots *x509.CertPool
}

// Roots are the trusted roots of the settings (nil: the system's).
func (s *Settings) Roots() *x509.CertPool { return s.roots }

// DefaultServerNames are the server names of the configuration: the
// global one and the tenants', distinct, in order.
func DefaultServerNames(cfg *config.Config) []string {
	var out []string
	add := func(n string) {
		if n != "" && !containsString(out, n) {
			out = append(out, n)
		}
	}
	add(cfg.Global.ServerName)
	for _, t := range cfg.Tenants {
		add(t.ServerName)
	}
	return out
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// DecodeSettings decodes the settings of probe p from n (nil: all
// defaults), applies the defaults and validates them.
func DecodeSettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*Settings, error) {
	s, w, err := probetype.DecodeInto[Settings](cfg, p, n, "federation")
	if err != nil {
		return nil, err
	}
	var errs config.Errors
	add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
	if len(s.ServerNames) == 0 {
		s.ServerNames = DefaultServerNames(cfg)
		if len(s.ServerNames) == 0 {
			add("federation.server_names: none given and global.server_name is not set")
		}
	}
	seen := map[string]bool{}
	for i, name := range s.ServerNames {
		if _, _, ok := mxfed.ParseServerName(name); !ok {
			add("federation.server_names[%d]: %q is not a server name (host, host:port, IP or [IPv6])", i, name)
		}
		if seen[name] {
			add("federation.server_names[%d]: %q is listed twice", i, name)
		}
		seen[name] = true
	}
	if s.Notary != "" {
		if _, _, ok := mxfed.ParseServerName(s.Notary); !ok {
			add("federation.notary: %q is not a server name", s.Notary)
		}
	}
	if s.DNSServer != "" {
		if err := CheckDNSServer(s.DNSServer); err != nil {
			add("federation.dns_server: %v", err)
		}
	}
	if s.CAFile != "" {
		roots, err := LoadRoots(s.CAFile)
		if err != nil {
			add("federation.ca_file: %v", err)
		}
		s.roots = roots
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return s, nil
}

// Metrics registers the federation type's metrics on reg and returns the
// observer that sets them from each run: per probe and server name, up,
// the last run's step durations and the signing keys' valid_until_ts.
func Metrics(reg prometheus.Registerer) (probetype.Observer, error) {
	o := &observer{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxprobe_federation_up",
			Help: "1 if the last run found the server name's federation endpoint and valid, self-signed keys.",
		}, []string{"probe", "server_name"}),
		step: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxprobe_federation_step_seconds",
			Help: "Duration of each step of the last run for the server name (discovery, connect, tls, version, keys, ...); steps that did not run are absent.",
		}, []string{"probe", "server_name", "step"}),
		validUntil: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxprobe_federation_key_valid_until_timestamp_seconds",
			Help: "valid_until_ts of the server's signing keys at the last run that verified them.",
		}, []string{"probe", "server_name"}),
		validity: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxprobe_federation_key_validity_seconds",
			Help: "Remaining validity of the server's signing keys (valid_until_ts minus the time of the last run that verified them).",
		}, []string{"probe", "server_name"}),
		seen: map[string]map[[2]string]bool{},
	}
	for _, c := range []prometheus.Collector{o.up, o.step, o.validUntil, o.validity} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return o.observe, nil
}

type observer struct {
	mu                             sync.Mutex
	up, step, validUntil, validity *prometheus.GaugeVec
	seen                           map[string]map[[2]string]bool // probe → (server, step) of the last run
}

func (o *observer) observe(r probes.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := map[[2]string]bool{}
	for name, v := range r.Signals {
		sig, server, ok := strings.Cut(name, ":")
		if !ok {
			continue
		}
		switch {
		case sig == SignalUp:
			o.up.WithLabelValues(r.Probe, server).Set(v)
			now[[2]string{server, ""}] = true
		case sig == SignalKeyValidUntil:
			o.validUntil.WithLabelValues(r.Probe, server).Set(v)
			o.validity.WithLabelValues(r.Probe, server).Set(v - float64(r.Started.UnixNano())/1e9)
			now[[2]string{server, "\x00keys"}] = true
		case strings.HasPrefix(sig, SignalStepPrefix):
			step := strings.TrimPrefix(sig, SignalStepPrefix)
			o.step.WithLabelValues(r.Probe, server, step).Set(v)
			now[[2]string{server, step}] = true
		}
	}
	for k := range o.seen[r.Probe] {
		if now[k] {
			continue
		}
		switch k[1] {
		case "":
			o.up.DeleteLabelValues(r.Probe, k[0])
		case "\x00keys":
			// Keys not verified this run: the last verified values stay
			// while the server is still configured.
			if !now[[2]string{k[0], ""}] {
				o.validUntil.DeleteLabelValues(r.Probe, k[0])
				o.validity.DeleteLabelValues(r.Probe, k[0])
			} else {
				now[k] = true
			}
		default:
			o.step.DeleteLabelValues(r.Probe, k[0], k[1])
		}
	}
	o.seen[r.Probe] = now
}
