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

func applyRoundtripDefaults(c *Config) {}

func validateRoundtrip(c *Config) Errors { return nil }
