package config

// AlertingConfig configures alert rules and notifiers.
type AlertingConfig struct{}

func applyAlertingDefaults(c *Config) {}

func validateAlerting(c *Config) Errors { return nil }
