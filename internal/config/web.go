package config

// WebConfig configures the HTTP API and status page.
type WebConfig struct{}

func applyWebDefaults(c *Config) {}

func validateWeb(c *Config) Errors { return nil }
