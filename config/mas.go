package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// MAS is the matrix-authentication-service deployment.
type MAS struct {
	// PublicURL is MAS's public base URL (env MAS_PUBLIC_URL). Discovery
	// falls back to its /.well-known/openid-configuration when the homeserver
	// does not serve auth_metadata.
	PublicURL string `yaml:"public_url" json:"public_url"`
	// RedirectURI is registered for the bot client (env MAS_REDIRECT_URI).
	// mxprobe never fetches it: it reads the code from MAS's redirect to it.
	RedirectURI string `yaml:"redirect_uri" json:"redirect_uri"`
	// Scopes are the OIDC scopes asked for (env MAS_SCOPES, default "openid email").
	Scopes string `yaml:"scopes" json:"scopes"`
	// ClientURI is the client_uri sent at registration (https, not localhost).
	// Default: the https origin of a web redirect URI, or the project page
	// for a native (loopback) one.
	ClientURI string `yaml:"client_uri" json:"client_uri"`
	// ClientName is the client_name sent at registration.
	ClientName string `yaml:"client_name" json:"client_name"`
	// StableScopes uses urn:matrix:client:* scopes instead of the MSC2967 ones.
	StableScopes bool `yaml:"stable_scopes" json:"stable_scopes"`
	// Upstream is how the bot authenticates at the upstream OIDC provider.
	Upstream Upstream `yaml:"upstream" json:"upstream"`
	// DiscoveryTTL is how long discovery and registration are cached.
	DiscoveryTTL Duration `yaml:"discovery_ttl" json:"discovery_ttl"`
	// CompatRedirectURL is the redirectUrl of compat SSO logins (never
	// fetched; the loginToken is read from MAS's redirect). Default:
	// redirect_uri, else http://localhost/mxprobe/sso.
	CompatRedirectURL string `yaml:"compat_redirect_url" json:"compat_redirect_url"`
	// Contacts are sent as the registration's contacts (email addresses),
	// which MAS v0.12 and older require. Optional.
	Contacts []string `yaml:"contacts" json:"contacts,omitempty"`
	// LoginBudget caps full logins through MAS across all tenants (default
	// 4 per 60 s, spread out): see mas_budget.go.
	LoginBudget MASLoginBudget `yaml:"login_budget" json:"login_budget"`
}

// DefaultCompatRedirectURL is the compat SSO redirectUrl when neither
// compat_redirect_url nor an http(s) redirect_uri gives one.
const DefaultCompatRedirectURL = "http://localhost/mxprobe/sso"

// Upstream describes the upstream provider login adapter.
type Upstream struct {
	// Adapter is "openmeet" (JSON email login at the platform API) or "form"
	// (an HTML login form on the page the provider's authorize endpoint shows).
	Adapter string `yaml:"adapter" json:"adapter"`
	// APIURL is the platform API base for the openmeet adapter.
	APIURL string `yaml:"api_url" json:"api_url"`
	// Origin is the provider's origin (scheme://host[:port]): the only
	// origin whose login form may receive the bot's password (form
	// adapter). Default: the origin of APIURL.
	Origin string `yaml:"origin" json:"origin"`
	// TenantHeader overrides the x-tenant-id value (default: the tenant id).
	TenantHeader string `yaml:"tenant_id" json:"tenant_id"`
	// Provider chooses the upstream provider on MAS's login page when it
	// lists several: the provider's id (a ULID) or its name as the page
	// shows it, case-insensitive. Not needed with one provider.
	Provider string `yaml:"provider" json:"provider"`
	// UsernameField / PasswordField name the form inputs for the form adapter.
	UsernameField string `yaml:"username_field" json:"username_field"`
	PasswordField string `yaml:"password_field" json:"password_field"`
}

// Upstream adapters.
const (
	UpstreamOpenMeet = "openmeet"
	UpstreamForm     = "form"
)

// Application types of the dynamically registered client.
const (
	AppTypeNative = "native"
	AppTypeWeb    = "web"
)

// DefaultMASClientURI is the client_uri of native registrations when none is set.
const DefaultMASClientURI = "https://github.com/mxprobe/mxprobe"

// ApplicationType derives the registration's application_type from the
// redirect URI: a loopback http redirect only passes MAS's policy as a
// native client, an https one as a web client.
func (m MAS) ApplicationType() string {
	u, err := url.Parse(m.RedirectURI)
	if err == nil && u.Scheme == "http" && IsLoopbackHost(u.Hostname()) {
		return AppTypeNative
	}
	if err == nil && u.Scheme != "https" && u.Scheme != "http" && u.Scheme != "" {
		return AppTypeNative // a private-use scheme (reversed client_uri host)
	}
	return AppTypeWeb
}

// IsLoopbackHost reports whether host is one of the loopback hosts MAS's
// client registration policy accepts: exactly localhost, 127.0.0.1 and
// [::1] (policies/client_registration/client_registration.rego is_localhost),
// not the rest of 127.0.0.0/8.
func IsLoopbackHost(host string) bool {
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1", "[::1]":
		return true
	}
	return false
}

// PlainHTTPHost reports whether plain http to host stays on this machine:
// localhost, an IPv4 loopback address (127.0.0.0/8) or [::1]. The bot's
// password and the login flow's secrets go over http only to such hosts.
func PlainHTTPHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// secretURLError says why the bot's password must not go to s (nil: it may).
func secretURLError(s string) error {
	if err := checkURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	if u.Scheme != "https" && !PlainHTTPHost(u.Hostname()) {
		return fmt.Errorf("the bot's password goes there: must be https (plain http only on localhost, 127.0.0.0/8 or [::1])")
	}
	return nil
}

// isLoopbackAddress reports whether host is any loopback address or name.
func isLoopbackAddress(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// masAllowedScope is MAS's authorization grant policy for the scopes a bot
// may ask for (policies/authorization_grant/authorization_grant.rego
// allowed_scope): openid, email, and the Matrix API and device scopes
// (which mxprobe adds itself).
func masAllowedScope(s string) bool {
	switch s {
	case "openid", "email", "urn:matrix:client:api:*", "urn:matrix:org.matrix.msc2967.client:api:*":
		return true
	}
	return strings.HasPrefix(s, "urn:matrix:client:device:") || strings.HasPrefix(s, "urn:matrix:org.matrix.msc2967.client:device:")
}

// usesMAS reports whether any tenant account logs in through MAS.
func (c *Config) usesMAS() (oidc, sso bool) {
	for i := range c.Tenants {
		t := &c.Tenants[i]
		for _, a := range []*Account{&t.Bot, t.Peer} {
			if a == nil {
				continue
			}
			switch a.Method {
			case MethodMASOIDC:
				oidc = true
			case MethodMASCompatSSO:
				sso = true
			}
		}
	}
	switch c.Global.LoginMethod {
	case MethodMASOIDC:
		oidc = true
	case MethodMASCompatSSO:
		sso = true
	}
	return oidc, sso
}

func applyMASDefaults(c *Config) {
	applyMASBudgetDefaults(c)
	m := &c.MAS
	m.Scopes = strings.Join(strings.Fields(m.Scopes), " ")
	if m.ClientURI == "" && m.RedirectURI != "" {
		if m.ApplicationType() == AppTypeWeb {
			if u, err := url.Parse(m.RedirectURI); err == nil && u.Host != "" {
				m.ClientURI = "https://" + u.Host + "/"
			}
		} else {
			m.ClientURI = DefaultMASClientURI
		}
	}
	if m.CompatRedirectURL == "" {
		m.CompatRedirectURL = m.RedirectURI
		// A private-use scheme redirect_uri (com.example:/cb) has no host;
		// compat SSO's redirectUrl needs one to be recognised.
		if u, err := url.Parse(m.CompatRedirectURL); err != nil || u.Host == "" {
			m.CompatRedirectURL = DefaultCompatRedirectURL
		}
	}
	if m.Upstream.Adapter == UpstreamForm {
		if m.Upstream.UsernameField == "" {
			m.Upstream.UsernameField = "email"
		}
		if m.Upstream.PasswordField == "" {
			m.Upstream.PasswordField = "password"
		}
	}
}

func validateMAS(c *Config) Errors {
	errs := validateMASBudget(c)
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s: mas.%s: ", c.File, field)+fmt.Sprintf(format, args...))
	}
	m := &c.MAS
	if m.PublicURL != "" {
		if err := checkURL(m.PublicURL); err != nil {
			add("public_url", "%v", err)
		}
	}
	if m.DiscoveryTTL < 0 {
		add("discovery_ttl", "must not be negative")
	}
	if m.RedirectURI != "" {
		if u, err := url.Parse(m.RedirectURI); err != nil || u.Scheme == "" {
			add("redirect_uri", "not an absolute URL")
		} else {
			if u.Fragment != "" || strings.Contains(m.RedirectURI, "#") {
				add("redirect_uri", "must not have a fragment (MAS refuses it)")
			}
			switch m.ApplicationType() {
			case AppTypeWeb:
				switch {
				case u.Scheme == "http" && isLoopbackAddress(u.Hostname()):
					add("redirect_uri", "loopback host %q: MAS accepts only localhost, 127.0.0.1 and [::1] for a native client", u.Hostname())
				case u.Scheme != "https":
					add("redirect_uri", "must be https, or http on localhost/127.0.0.1/[::1] (a native client)")
				}
			case AppTypeNative:
				if u.Scheme != "http" && u.Host != "" {
					add("redirect_uri", "a private-use scheme redirect URI takes no host (%s:/path), as MAS's policy requires", u.Scheme)
				}
			}
		}
	}
	if m.ClientURI != "" {
		cu, err := url.Parse(m.ClientURI)
		switch {
		case err != nil || cu.Scheme != "https" || cu.Host == "":
			add("client_uri", "must be an https URL (MAS's policy)")
		case IsLoopbackHost(cu.Hostname()):
			add("client_uri", "must not be localhost or a loopback address (MAS's policy)")
		case m.ApplicationType() == AppTypeWeb && m.RedirectURI != "":
			if ru, err := url.Parse(m.RedirectURI); err == nil && !HostWithin(ru.Hostname(), cu.Hostname()) {
				add("client_uri", "host %q must be the redirect_uri's host or a parent of it for a web client", cu.Hostname())
			}
		}
	}
	for _, sc := range strings.Fields(m.Scopes) {
		if !masAllowedScope(sc) {
			add("scopes", "scope %q is not allowed by MAS's authorization grant policy (allowed: openid, email; mxprobe adds the Matrix API and device scopes)", sc)
		}
	}
	for i, c := range m.Contacts {
		if !strings.Contains(c, "@") || strings.ContainsAny(c, " \t\n") {
			add(fmt.Sprintf("contacts[%d]", i), "not an email address")
		}
	}
	switch m.Upstream.Adapter {
	case UpstreamOpenMeet, UpstreamForm:
	default:
		add("upstream.adapter", "unknown adapter %q (known: openmeet, form)", m.Upstream.Adapter)
	}
	if m.Upstream.APIURL != "" {
		if err := secretURLError(m.Upstream.APIURL); err != nil {
			add("upstream.api_url", "%v", err)
		}
	}
	if m.Upstream.Origin != "" {
		if err := secretURLError(m.Upstream.Origin); err != nil {
			add("upstream.origin", "%v", err)
		} else if u, _ := url.Parse(m.Upstream.Origin); (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			add("upstream.origin", "an origin is scheme://host[:port], without a path or query")
		}
	}
	if m.CompatRedirectURL != "" {
		if u, err := url.Parse(m.CompatRedirectURL); err != nil || u.Scheme == "" || u.Host == "" {
			add("compat_redirect_url", "not an absolute URL")
		}
	}
	oidc, sso := c.usesMAS()
	if (oidc || sso) && m.Upstream.Adapter == UpstreamOpenMeet && m.Upstream.APIURL == "" {
		add("upstream.api_url", "missing: the openmeet adapter logs the bot in at the platform API")
	}
	if (oidc || sso) && m.Upstream.Adapter == UpstreamForm && m.Upstream.Origin == "" && m.Upstream.APIURL == "" {
		add("upstream.origin", "missing: the form adapter submits the bot's password only to the provider's origin (upstream.origin, or upstream.api_url's)")
	}
	if oidc && m.ClientURI == "" {
		add("client_uri", "missing (needed for client registration)")
	}
	return errs
}

// HostWithin reports whether host is parent or a subdomain of it.
func HostWithin(host, parent string) bool {
	host, parent = strings.ToLower(host), strings.ToLower(parent)
	return host == parent || strings.HasSuffix(host, "."+parent)
}

// IsMASMethod reports whether a login method's full logins go through MAS
// (and its upstream provider).
func IsMASMethod(method string) bool {
	return method == MethodMASOIDC || method == MethodMASCompatSSO
}
