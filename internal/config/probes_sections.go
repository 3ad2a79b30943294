package config

// RoundtripConfig configures the room round-trip probe.
type RoundtripConfig struct {
	// Peer is the shared peer account, used for tenants that have none.
	Peer *Account `yaml:"peer" json:"peer,omitempty"`
	// MinPowerLevel is the power level the bot must hold in its rooms.
	MinPowerLevel int `yaml:"min_power_level" json:"min_power_level"`
}

// RoomMessageConfig configures the persistent-room message probe.
type RoomMessageConfig struct{}

// SynapseConfig configures the Synapse metrics probe.
type SynapseConfig struct {
	// URL is the metrics page.
	URL string `yaml:"url" json:"url"`
}

func applyProbeDefaults(c *Config) {}

func validateProbeSections(c *Config) Errors { return nil }
