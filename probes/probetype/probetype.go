// Package probetype is the shape of a probe type: one value that says
// everything the daemon needs to configure, build, budget and export it. A
// probe type's package defines one with Define (httpcheck.Type, for one);
// cmd/mxprobe lists it in its registry (probetypes.go), one line per type.
package probetype

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

// Type is one probe type, its settings type erased (Define builds it).
type Type struct {
	// Kind is what the configuration knows of the type: name, per tenant,
	// default schedule and timeout, settings key and decoder, rate-limit
	// costs.
	config.Kind
	// TargetField (optional) is the settings field `mxprobe run TYPE
	// --target X` sets (the type has one target, a URL for one).
	TargetField string
	// Credentials (optional) are the settings fields sent to the target
	// (headers, tokens): `--target` drops them when it names another
	// origin than the configured one, so they never reach a host they were
	// not configured for.
	Credentials []string
	// Steps and Classes are the step names and failure classes the type's
	// runs report (its declared constants), shared classes included.
	Steps   []string
	Classes []probes.Class
	// New builds the prober of one configured probe.
	New func(in Inputs) (probes.Prober, error)
	// Metrics (optional) registers the type's own metrics, once per
	// daemon, and returns what observes each Result of the type (nil:
	// nothing per result).
	Metrics func(reg prometheus.Registerer) (Observer, error)
	// PrepareRun (optional) adjusts a probe for `mxprobe run` from the
	// command line (--window) after --target is applied.
	PrepareRun func(c *config.Config, p *config.Probe, o RunOptions) error
}

// Observer sees every Result of its probe type (per-result metrics).
type Observer func(probes.Result)

// RunOptions are the command line's adjustments of `mxprobe run`.
type RunOptions struct {
	// Window is --window (0: not given).
	Window time.Duration
}

// Def is the typed definition of a probe type whose settings are S
// (struct{} for a type without settings).
type Def[S any] struct {
	Name string
	// PerTenant, Schedule, Timeout, DeriveSchedule, Default, SettingsKey,
	// TargetField and Credentials: as in Type and config.Kind.
	PerTenant      bool
	Schedule       string
	Timeout        time.Duration
	DeriveSchedule bool
	Default        bool
	SettingsKey    string
	TargetField    string
	Credentials    []string
	Steps          []string
	Classes        []probes.Class
	// Decode decodes the settings node n (nil when absent), applies the
	// defaults and validates (Decode and DecodeStrict help); nil: the
	// settings are S's zero value.
	Decode func(c *config.Config, p *config.Probe, n *yaml.Node) (*S, error)
	// New builds the prober of probe in.Name from its settings.
	New func(in Inputs, s *S) (probes.Prober, error)
	// Costs (optional): what one run for tenant t (nil for a global probe)
	// sends against each rate limiter.
	Costs func(c *config.Config, p *config.Probe, s *S, t *config.Tenant) []config.Cost
	// Accounts (optional): the accounts a run for tenant t logs in as
	// besides t's bot (config.Kind.Accounts).
	Accounts func(c *config.Config, p *config.Probe, s *S, t *config.Tenant) []*config.Account
	// DefaultSchedule (optional): as in config.Kind (it runs before the
	// settings are decoded, so it has none).
	DefaultSchedule func(c *config.Config, p *config.Probe) string
	// Metrics and PrepareRun: as in Type.
	Metrics    func(reg prometheus.Registerer) (Observer, error)
	PrepareRun func(c *config.Config, p *config.Probe, s *S, o RunOptions) error
}

// Define erases the settings type of d: the one place where a probe type's
// settings leave and re-enter their type.
func Define[S any](d Def[S]) Type {
	t := Type{
		Kind: config.Kind{
			Name: d.Name, PerTenant: d.PerTenant, Schedule: d.Schedule, Timeout: d.Timeout,
			DeriveSchedule: d.DeriveSchedule, Default: d.Default, SettingsKey: d.SettingsKey,
			DefaultSchedule: d.DefaultSchedule,
		},
		TargetField: d.TargetField,
		Credentials: d.Credentials,
		Steps:       d.Steps,
		Classes:     d.Classes,
		Metrics:     d.Metrics,
	}
	t.Decode = func(c *config.Config, p *config.Probe, n *yaml.Node) (any, error) {
		if d.Decode == nil {
			return new(S), nil
		}
		s, err := d.Decode(c, p, n)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	t.New = func(in Inputs) (probes.Prober, error) {
		s, err := SettingsOf[S](in.Probe)
		if err != nil {
			return nil, err
		}
		return d.New(in, s)
	}
	if d.Costs != nil {
		t.Costs = func(c *config.Config, p *config.Probe, tn *config.Tenant) []config.Cost {
			s, err := SettingsOf[S](p)
			if err != nil {
				return nil // reported by the decoder
			}
			return d.Costs(c, p, s, tn)
		}
	}
	if d.Accounts != nil {
		t.Accounts = func(c *config.Config, p *config.Probe, tn *config.Tenant) []*config.Account {
			s, err := SettingsOf[S](p)
			if err != nil {
				return nil // reported by the decoder
			}
			return d.Accounts(c, p, s, tn)
		}
	}
	if d.PrepareRun != nil {
		t.PrepareRun = func(c *config.Config, p *config.Probe, o RunOptions) error {
			s, err := SettingsOf[S](p)
			if err != nil {
				return err
			}
			return d.PrepareRun(c, p, s, o)
		}
	}
	return t
}

// SettingsOf returns the decoded settings of probe p as S; an error when
// they are absent or of another type (a probe given to the wrong type).
func SettingsOf[S any](p *config.Probe) (*S, error) {
	if p == nil {
		return nil, fmt.Errorf("no probe")
	}
	s, ok := p.Settings().(*S)
	if !ok || s == nil {
		return nil, fmt.Errorf("probe %q: settings of type %T, want %T", p.Name, p.Settings(), s)
	}
	return s, nil
}

// Inputs are what a prober may be built from.
type Inputs struct {
	Name string
	// Probe is the configured probe (common fields; its settings come to
	// Def.New typed).
	Probe *config.Probe
	// Tenants are the tenants the probe runs for, by id (empty for a
	// global probe).
	Tenants map[string]*config.Tenant
	// Homeservers are the distinct homeserver URLs of the configuration
	// (config.Config.Homeservers).
	Homeservers []string
	// HTTP is the shared HTTP client.
	HTTP *http.Client
	// Deps are the process's long-lived services (the login manager, the
	// Synapse baselines), by type: Need fetches one.
	Deps *Deps
}

// Deps holds the process's long-lived services by their type, so a probe
// type names what it needs without this package knowing every service.
type Deps struct {
	m map[reflect.Type]any
}

// Provide adds v to d as the service of type T.
func Provide[T any](d *Deps, v T) {
	if d.m == nil {
		d.m = map[reflect.Type]any{}
	}
	d.m[reflect.TypeFor[T]()] = v
}

// Need returns the service of type T from in.Deps, or an error naming it.
func Need[T any](in Inputs) (T, error) {
	var zero T
	if in.Deps != nil {
		if v, ok := in.Deps.m[reflect.TypeFor[T]()]; ok {
			return v.(T), nil
		}
	}
	return zero, fmt.Errorf("probe %q: this build provides no %v", in.Name, reflect.TypeFor[T]())
}

// CheckResult reports a step or class of r that t does not declare (for
// the type's tests: what a run reports is what the type says it reports).
func CheckResult(t Type, r probes.Result) error {
	for _, s := range r.Steps {
		if !slices.Contains(t.Steps, s.Name) {
			return fmt.Errorf("type %s: step %q is not declared (declared: %v)", t.Name, s.Name, t.Steps)
		}
		if s.Class != probes.ClassNone && !slices.Contains(t.Classes, s.Class) {
			return fmt.Errorf("type %s: class %q of step %q is not declared (declared: %v)", t.Name, s.Class, s.Name, t.Classes)
		}
	}
	if r.Class != probes.ClassNone && !slices.Contains(t.Classes, r.Class) {
		return fmt.Errorf("type %s: class %q is not declared (declared: %v)", t.Name, r.Class, t.Classes)
	}
	return nil
}
