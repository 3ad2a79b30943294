package config

// SynapseConfig configures the Synapse metrics probe.
type SynapseConfig struct {
	// URL is the metrics page.
	URL string `yaml:"url" json:"url"`
}

func applySynapseDefaults(c *Config) {}

func validateSynapse(c *Config) Errors { return nil }
