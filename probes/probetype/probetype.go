// Package probetype is the shape of a probe type: one value that says
// everything the daemon needs to configure, build and export it. A probe
// type's package exports one (matrix.RoomMessageType); cmd/mxprobe lists
// it in its registry (probetypes.go).
package probetype

import (
	"net/http"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// Type is one probe type.
type Type struct {
	// Name is the value of `type:` in the configuration.
	Name string
	// PerTenant: the probe runs once per tenant (else once for the
	// deployment).
	PerTenant bool
	// SettingsKey is the key of the type's settings under the probe
	// (empty: the type has none).
	SettingsKey string
	// Settings decodes the type's settings from their YAML node (nil when
	// absent), applies the defaults and validates them; errors name the
	// field and the line. Nil when the type has no settings.
	Settings func(cfg *config.Config, p *config.Probe, n *yaml.Node) (any, error)
	// New builds the prober of one configured probe.
	New func(in Inputs) (probes.Prober, error)
}

// Inputs are what a prober may be built from.
type Inputs struct {
	Name string
	// Settings is what Type.Settings returned.
	Settings any
	// Config is the configuration being assembled (tenants and accounts).
	Config *config.Config
	// Auth logs accounts in and keeps their sessions (shared, long-lived).
	Auth *auth.Manager
	// HTTP is the shared HTTP client.
	HTTP *http.Client
}
