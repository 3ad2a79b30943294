package config

// MAS is the matrix-authentication-service deployment.
type MAS struct {
	// PublicURL is MAS's public base URL (env MAS_PUBLIC_URL).
	PublicURL string `yaml:"public_url" json:"public_url"`
	// RedirectURI is registered for the bot client (env MAS_REDIRECT_URI).
	RedirectURI string `yaml:"redirect_uri" json:"redirect_uri"`
	// Scopes are the OIDC scopes asked for (env MAS_SCOPES, default "openid email").
	Scopes string `yaml:"scopes" json:"scopes"`
	// ClientURI is the client_uri sent at registration (https).
	ClientURI string `yaml:"client_uri" json:"client_uri"`
	// ClientName is the client_name sent at registration.
	ClientName string `yaml:"client_name" json:"client_name"`
	// StableScopes uses urn:matrix:client:* scopes instead of the MSC2967 ones.
	StableScopes bool `yaml:"stable_scopes" json:"stable_scopes"`
	// Upstream is how the bot authenticates at the upstream OIDC provider.
	Upstream Upstream `yaml:"upstream" json:"upstream"`
	// DiscoveryTTL is how long discovery and registration are cached.
	DiscoveryTTL Duration `yaml:"discovery_ttl" json:"discovery_ttl"`
}

// Upstream describes the upstream provider login adapter.
type Upstream struct {
	// Adapter is "openmeet" (JSON email login at the platform API) or "form"
	// (an HTML login form on the page the provider's authorize endpoint shows).
	Adapter string `yaml:"adapter" json:"adapter"`
	// APIURL is the platform API base for the openmeet adapter.
	APIURL string `yaml:"api_url" json:"api_url"`
	// UsernameField / PasswordField name the form inputs for the form adapter.
	UsernameField string `yaml:"username_field" json:"username_field"`
	PasswordField string `yaml:"password_field" json:"password_field"`
}

func applyMASDefaults(c *Config) {}

func validateMAS(c *Config) Errors { return nil }
