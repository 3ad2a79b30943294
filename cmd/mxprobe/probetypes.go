package main

import (
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/prometheus/common/model"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/federation"
	"github.com/mxprobe/mxprobe/probes/httpcheck"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/media"
	"github.com/mxprobe/mxprobe/probes/probetype"
	"github.com/mxprobe/mxprobe/probes/synapse"
	"github.com/mxprobe/mxprobe/probes/tlscheck"
)

// probeType is one probe type as the daemon knows it: how its prober is
// built, what `mxprobe run` must settle before running it alone, and the
// metrics it adds to /metrics.
type probeType struct {
	// build makes the prober of one configured probe of this type.
	build func(b *builder, p *config.Probe) (probes.Prober, error)
	// prepareRun (optional) adjusts a probe of this type for `mxprobe run`
	// from the command line (--target, --window) and checks it.
	prepareRun func(c *cli, e *env, cfg *config.Config, p *config.Probe) error
	// metrics (optional) adds the type's own metrics, once per daemon.
	metrics func(m *metrics.Metrics) error
	// settingsKey is the probe key the type reads its settings from (types
	// of the probetype shape); any other key outside the common structure
	// is an error.
	settingsKey string
	// kind (types of the probetype shape) is what the configuration must
	// know of the type: defaults, per tenant, rate-limit cost.
	kind *config.Kind
}

// fromType adapts a probe type of the probetype shape (its package owns its
// settings, defaults, validation, costs and constructor; the configuration
// has decoded the settings already).
func fromType(t probetype.Type) probeType {
	pt := probeType{
		settingsKey: t.SettingsKey,
		kind:        &t.Kind,
		build: func(b *builder, p *config.Probe) (probes.Prober, error) {
			return t.New(probetype.Inputs{Name: p.Name, Probe: p, Tenants: b.cfg.TenantMap(p), Homeservers: b.cfg.Homeservers(),
				HTTP: b.st.http, Deps: b.st.deps})
		},
	}
	if t.TargetField != "" || t.PrepareRun != nil {
		pt.prepareRun = func(c *cli, _ *env, cfg *config.Config, p *config.Probe) error {
			if t.TargetField != "" && c.runTarget != "" {
				n := p.SettingsNode(t.SettingsKey)
				if len(t.Credentials) > 0 {
					var err error
					if n, err = dropCredentials(n, t.TargetField, c.runTarget, t.Credentials); err != nil {
						return fmt.Errorf("probe %q: %s: %w", p.Name, t.SettingsKey, err)
					}
				}
				if err := cfg.SetSettings(p, withField(n, t.TargetField, c.runTarget)); err != nil {
					return err
				}
			}
			if t.PrepareRun == nil {
				return nil
			}
			if p.Settings() == nil {
				if err := cfg.Decode(p); err != nil {
					return err
				}
			}
			var o probetype.RunOptions
			if c.runWindow != "" {
				md, err := model.ParseDuration(c.runWindow)
				if err != nil || md <= 0 {
					return fmt.Errorf("--window %q: use a duration such as 15s", c.runWindow)
				}
				o.Window = time.Duration(md)
			}
			return t.PrepareRun(cfg, p, o)
		}
	}
	if t.Metrics != nil {
		pt.metrics = func(m *metrics.Metrics) error {
			o, err := t.Metrics(m.Registry)
			if err == nil && o != nil {
				m.AddObserver(t.Name, o)
			}
			return err
		}
	}
	return pt
}

// builder is what probe constructors may use: the configuration being
// assembled, the process environment and the long-lived stores.
type builder struct {
	cfg *config.Config
	env *env
	st  *stores
}

// probeTypes is the registry of probe types: adding one is its package
// plus one line here (see README, "Layout").
func probeTypes() map[string]probeType {
	return map[string]probeType{
		matrix.TypeVersions:        fromType(matrix.VersionsType()),
		auth.TypeLogin:             fromType(auth.LoginType()),
		matrix.TypeRoundtrip:       fromType(matrix.RoundtripType()),
		matrix.TypeRoomMessage:     fromType(matrix.RoomMessageType()),
		httpcheck.TypeHTTP:         fromType(httpcheck.Type()),
		media.TypeMedia:            fromType(media.Type()),
		federation.TypeFederation:  fromType(federation.Type()),
		federation.TypeDelivery:    fromType(federation.DeliveryType()),
		tlscheck.TypeTLS:           fromType(tlscheck.Type()),
		synapse.TypeSynapseMetrics: fromType(synapse.Type()),
	}
}

// dropCredentials returns the settings n without the credential fields when
// target is not on the origin of the configured target field (a configured
// bearer token or API key is meant for its own host only); n itself
// otherwise. Merge keys are expanded in the copy.
func dropCredentials(n *yaml.Node, field, target string, creds []string) (*yaml.Node, error) {
	entries, err := probetype.Entries(n)
	if err != nil || entries == nil {
		return n, err
	}
	configured := ""
	for _, e := range entries {
		if e[0].Value == field {
			configured = probetype.Resolve(e[1]).Value
		}
	}
	if sameOrigin(configured, target) {
		return n, nil
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line, Column: n.Column}
	for _, e := range entries {
		if !slices.Contains(creds, e[0].Value) {
			out.Content = append(out.Content, e[0], e[1])
		}
	}
	return out, nil
}

// sameOrigin: the URLs a and b have the same scheme, host and port.
func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return a != "" && err1 == nil && err2 == nil && ua.Host != "" && httpcheck.SameOrigin(ua, ub)
}

// withField returns a copy of the mapping node n (nil: an empty one) with
// key set to the string value.
func withField(n *yaml.Node, key, value string) *yaml.Node {
	n = probetype.Resolve(n) // `http: *defaults`
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if n != nil && n.Kind == yaml.MappingNode {
		c := *n
		c.Content = append([]*yaml.Node(nil), n.Content...)
		out = &c
	}
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
	for i := 0; i+1 < len(out.Content); i += 2 {
		if out.Content[i].Value == key {
			out.Content[i+1] = v
			return out
		}
	}
	out.Content = append(out.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return out
}

// kinds are the kinds the configuration must accept beyond its built-in
// probe types (passed to config.Load).
func (e *env) kinds() []config.Kind {
	var out []config.Kind
	for _, pt := range e.probeTypes() {
		if pt.kind != nil {
			out = append(out, *pt.kind)
		}
	}
	return out
}
