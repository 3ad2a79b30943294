package config

import (
	"strings"
	"testing"
)

func parseMAS(t *testing.T, yml string, env map[string]string) (*Config, error) {
	t.Helper()
	return parse([]byte(yml), "m.yml", func(k string) string { return env[k] })
}

const masTenant = `
tenants:
  - id: acme
    homeserver_url: https://matrix.example.org
    bot: {method: mas_oidc, password: sekret-pw}
`

func TestMASDefaultsNativeFromEnv(t *testing.T) {
	cfg, err := parseMAS(t, "mas: {upstream: {api_url: https://api.example.org}}\n"+masTenant, map[string]string{
		"MAS_PUBLIC_URL": "https://mas.example.org", "MAS_REDIRECT_URI": "http://localhost:9005/auth/matrix/callback",
		"MAS_SCOPES": "openid  email",
	})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.MAS
	if m.ApplicationType() != AppTypeNative || m.ClientURI != DefaultMASClientURI || m.Scopes != "openid email" ||
		m.CompatRedirectURL != m.RedirectURI || m.Upstream.Adapter != UpstreamOpenMeet || m.DiscoveryTTL.D().Hours() != 1 {
		t.Fatalf("defaults: %+v", m)
	}
	if cfg.Tenants[0].Bot.Email != "bot-acme@openmeet.net" {
		t.Fatalf("email %q", cfg.Tenants[0].Bot.Email)
	}
}

func TestMASWebClientURIDerived(t *testing.T) {
	cfg, err := parseMAS(t, `mas:
  redirect_uri: https://bots.example.org/cb
  upstream: {adapter: form, origin: 'https://login.example.org'}
`+masTenant, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MAS.ApplicationType() != AppTypeWeb || cfg.MAS.ClientURI != "https://bots.example.org/" ||
		cfg.MAS.Upstream.UsernameField != "email" || cfg.MAS.Upstream.PasswordField != "password" {
		t.Fatalf("%+v", cfg.MAS)
	}
}

func TestMASValidation(t *testing.T) {
	for _, tc := range []struct{ yml, want string }{
		{"mas: {redirect_uri: 'http://example.org/cb', upstream: {api_url: 'https://a.example'}}\n" + masTenant, "mas.redirect_uri: must be https"},
		{"mas: {redirect_uri: 'https://a.example.org/cb#frag', upstream: {api_url: 'https://a.example'}}\n" + masTenant, "fragment"},
		{"mas: {redirect_uri: 'https://a.example.org/cb', client_uri: 'http://a.example.org/', upstream: {api_url: 'https://a.example'}}\n" + masTenant, "mas.client_uri: must be an https URL"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', client_uri: 'https://localhost/', upstream: {api_url: 'https://a.example'}}\n" + masTenant, "must not be localhost"},
		{"mas: {redirect_uri: 'https://a.example.org/cb', client_uri: 'https://other.example.net/', upstream: {api_url: 'https://a.example'}}\n" + masTenant, "parent of it for a web client"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb'}\n" + masTenant, "mas.upstream.api_url: missing"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {adapter: saml, api_url: 'https://a.example'}}\n" + masTenant, "unknown adapter"},
		{"mas: {upstream: {api_url: 'https://a.example'}}\n" + masTenant, "needs mas.redirect_uri"},
		{"mas: {public_url: 'ftp://mas', redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'https://a.example'}}\n" + masTenant, "mas.public_url"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'http://api.example.org'}}\n" + masTenant, "mas.upstream.api_url: the bot's password goes there: must be https"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {adapter: form}}\n" + masTenant, "mas.upstream.origin: missing"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {adapter: form, origin: 'http://login.example.org'}}\n" + masTenant, "mas.upstream.origin: the bot's password goes there: must be https"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {adapter: form, origin: 'https://login.example.org/sign-in'}}\n" + masTenant, "without a path"},
	} {
		_, err := parseMAS(t, tc.yml, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.yml, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "sekret-pw") {
			t.Errorf("error echoes the password: %v", err)
		}
		if err != nil && !strings.Contains(err.Error(), "m.yml") {
			t.Errorf("error does not name the file: %v", err)
		}
	}
}

// MAS's policies: loopback is exactly localhost, 127.0.0.1, [::1]; scopes
// outside the authorization grant policy are refused by name; a
// private-use scheme gets a compat redirect URL that works.
func TestMASRefusesWhatMASRefuses(t *testing.T) {
	for _, tc := range []struct{ yml, want string }{
		{"mas: {redirect_uri: 'http://127.0.0.2:9005/cb', upstream: {api_url: 'https://a.example'}}\n" + masTenant,
			`loopback host "127.0.0.2": MAS accepts only localhost, 127.0.0.1 and [::1]`},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', scopes: 'openid profile', upstream: {api_url: 'https://a.example'}}\n" + masTenant,
			`mas.scopes: scope "profile" is not allowed`},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', scopes: 'openid urn:synapse:admin:*', upstream: {api_url: 'https://a.example'}}\n" + masTenant,
			`scope "urn:synapse:admin:*" is not allowed`},
		{"mas: {redirect_uri: 'com.github://host/cb', upstream: {api_url: 'https://a.example'}}\n" + masTenant,
			"private-use scheme redirect URI takes no host"},
		{"mas: {redirect_uri: 'http://localhost:9005/cb', contacts: ['nobody'], upstream: {api_url: 'https://a.example'}}\n" + masTenant,
			"mas.contacts[0]: not an email address"},
	} {
		_, err := parseMAS(t, tc.yml, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\nerror %v, want %q", tc.yml, err, tc.want)
		}
	}
	for _, ok := range []string{"http://localhost:9005/cb", "http://127.0.0.1:9005/cb", "http://[::1]:9005/cb"} {
		cfg, err := parseMAS(t, "mas: {redirect_uri: '"+ok+"', upstream: {api_url: 'https://a.example'}, contacts: [ops@example.org]}\n"+masTenant, nil)
		if err != nil || cfg.MAS.ApplicationType() != AppTypeNative {
			t.Errorf("%s: %v", ok, err)
		}
	}
	cfg, err := parseMAS(t, "mas: {redirect_uri: 'com.github:/callback', upstream: {api_url: 'https://a.example'}}\n"+masTenant, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MAS.ApplicationType() != AppTypeNative || cfg.MAS.CompatRedirectURL != DefaultCompatRedirectURL {
		t.Fatalf("private-use scheme: %s, compat %q", cfg.MAS.ApplicationType(), cfg.MAS.CompatRedirectURL)
	}
}

// The bot's password goes over plain http only to loopback: a platform
// API or provider origin on localhost, 127.0.0.0/8 or [::1] is accepted.
func TestMASUpstreamLoopbackHTTP(t *testing.T) {
	for _, yml := range []string{
		"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'http://127.0.0.2:3000'}}\n",
		"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {api_url: 'http://localhost:3000/api'}}\n",
		"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {adapter: form, origin: 'http://[::1]:8080/'}}\n",
		"mas: {redirect_uri: 'http://localhost:9005/cb', upstream: {adapter: form, origin: 'https://login.example.org'}}\n",
	} {
		if _, err := parseMAS(t, yml+masTenant, nil); err != nil {
			t.Errorf("%s: %v", yml, err)
		}
	}
}
