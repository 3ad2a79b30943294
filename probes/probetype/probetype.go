// Package probetype is the shape of a probe type: one value that says
// everything the daemon needs to configure, build and export it. A probe
// type's package exports one (matrix.RoomMessageType); cmd/mxprobe lists
// it in its registry (probetypes.go).
package probetype

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// Type is one probe type.
type Type struct {
	// Kind is what the configuration knows of the type: its name (the
	// value of `type:`), whether it runs per tenant, its default schedule
	// and timeout, and the events a run sends (for the rate-limit check).
	config.Kind
	// SettingsKey is the key of the type's settings under the probe
	// (empty: the type has none).
	SettingsKey string
	// TargetField (optional) is the settings field `mxprobe run TYPE
	// --target X` sets (the type has one target, a URL for one).
	TargetField string
	// Credentials (optional) are the settings fields sent to the target
	// (headers, tokens): `--target` drops them when it names another
	// origin than the configured one, so they never reach a host they were
	// not configured for.
	Credentials []string
	// Settings decodes the type's settings from their YAML node (nil when
	// absent), applies the defaults and validates them; errors name the
	// field and the line. Nil when the type has no settings.
	Settings func(cfg *config.Config, p *config.Probe, n *yaml.Node) (any, error)
	// New builds the prober of one configured probe.
	New func(in Inputs) (probes.Prober, error)
	// Metrics (optional) registers the type's own metrics, once per
	// daemon, beside the metrics every probe has (exporters/metrics).
	Metrics func(reg prometheus.Registerer) error
}

// Inputs are what a prober may be built from.
type Inputs struct {
	Name string
	// Settings is what Type.Settings returned.
	Settings any
	// Tenants are the tenants the probe runs for, by id (empty for a
	// global probe).
	Tenants map[string]*config.Tenant
	// Auth logs accounts in and keeps their sessions (shared, long-lived).
	Auth *auth.Manager
	// HTTP is the shared HTTP client.
	HTTP *http.Client
}
