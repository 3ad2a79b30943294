package config

import (
	"fmt"
	"net/url"
	"strings"
)

// where names a tenant for messages: file:line for file tenants, the
// TENANTS_B64 index for the others.
func (c *Config) where(t *Tenant) string {
	switch {
	case t.line > 0:
		return fmt.Sprintf("%s:%d: tenant %q", c.File, t.line, t.ID)
	case t.line < 0:
		return fmt.Sprintf("TENANTS_B64[%d] (id %q)", -t.line-1, t.ID)
	}
	return fmt.Sprintf("tenant %q", t.ID)
}

func (c *Config) probeWhere(p *Probe) string {
	if p.line > 0 {
		return fmt.Sprintf("%s:%d: probe %q", c.File, p.line, p.Name)
	}
	return fmt.Sprintf("probe %q", p.Name)
}

var knownMethods = map[string]bool{
	MethodPassword: true, MethodToken: true, MethodMASOIDC: true,
	MethodMASCompatSSO: true, MethodMASCompatPassword: true, MethodAppService: true,
}

func validate(c *Config) Errors {
	var errs Errors
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if c.Global.HomeserverURL != "" {
		if err := checkURL(c.Global.HomeserverURL); err != nil {
			add("%s: global.homeserver_url: %v", c.File, err)
		}
	}
	if c.Global.Concurrency < 0 {
		add("%s: global.concurrency: must be positive", c.File)
	}
	if j := c.Global.JitterFraction(); j < 0 || j > 1 {
		add("%s: global.jitter: must be between 0 and 1 (a fraction of the interval)", c.File)
	}
	if !knownMethods[c.Global.LoginMethod] {
		add("%s: global.login_method: unknown method %q (known: %s)", c.File, c.Global.LoginMethod, methodList())
	}

	ids := map[string]bool{}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		w := c.where(t)
		if t.ID == "" {
			add("%s: id: missing", w)
			continue
		}
		if !ValidTenantID(t.ID) {
			add("%s: id: %s", w, TenantIDRule)
		}
		if ids[t.ID] {
			add("%s: id: duplicate", w)
		}
		ids[t.ID] = true
		if t.HomeserverURL == "" {
			add("%s: homeserver_url: missing (set it on the tenant, global.homeserver_url or MATRIX_HOMESERVER_URL)", w)
		} else if err := checkURL(t.HomeserverURL); err != nil {
			add("%s: homeserver_url: %v", w, err)
		}
		errs = append(errs, c.validateAccount(w+": bot", &t.Bot)...)
		if t.Peer != nil {
			errs = append(errs, c.validateAccount(w+": peer", t.Peer)...)
		}
	}

	names := map[string]bool{}
	for i := range c.Probes {
		p := &c.Probes[i]
		w := c.probeWhere(p)
		if _, ok := c.kindOf(p.Type); !ok {
			add("%s: type: unknown probe type %q (known: %s)", w, p.Type, strings.Join(c.ProbeTypes(), ", "))
		}
		if names[p.Name] {
			add("%s: name: duplicate", w)
		}
		names[p.Name] = true
		if p.Timeout <= 0 {
			add("%s: timeout: must be positive", w)
		}
		for _, id := range p.Tenants {
			if !ids[id] {
				add("%s: tenants: unknown tenant %q", w, id)
			}
		}
	}
	errs = append(errs, validateMAS(c)...)
	errs = append(errs, validateAppService(c)...)
	errs = append(errs, validateLimits(c)...)
	errs = append(errs, validateAlerting(c)...)
	errs = append(errs, validateWeb(c)...)
	return errs
}

func (c *Config) validateAccount(w string, a *Account) Errors {
	var errs Errors
	if !knownMethods[a.Method] {
		return Errors{fmt.Sprintf("%s.method: unknown method %q (known: %s)", w, a.Method, methodList())}
	}
	switch a.Method {
	case MethodToken:
		if a.AccessToken == "" && a.AccessTokenFile == "" {
			errs = append(errs, w+".access_token: missing (or access_token_file)")
		}
	case MethodAppService:
		if a.AccessToken == "" && a.AccessTokenFile == "" {
			errs = append(errs, w+".access_token: missing: the as_token (access_token, access_token_file, appservice.token, appservice.token_file or MATRIX_APPSERVICE_TOKEN)")
		}
		if a.AccessToken != "" && a.AccessTokenFile != "" {
			errs = append(errs, w+": access_token and access_token_file are mutually exclusive")
		}
		if a.User == "" {
			errs = append(errs, w+".user: missing: the user to act as (or appservice.id / MATRIX_APPSERVICE_ID, the sender_localpart)")
		}
	default:
		if a.Password == "" && a.PasswordFile == "" {
			errs = append(errs, w+".password: missing (or password_file)")
		}
		if a.Password != "" && a.PasswordFile != "" {
			errs = append(errs, w+": password and password_file are mutually exclusive")
		}
	}
	if a.Method == MethodMASOIDC || a.Method == MethodMASCompatSSO {
		if a.Email == "" {
			errs = append(errs, w+".email: missing (needed by the upstream login)")
		}
		if c.MAS.RedirectURI == "" && a.Method == MethodMASOIDC {
			errs = append(errs, w+": method mas_oidc needs mas.redirect_uri (or MAS_REDIRECT_URI)")
		}
	}
	if a.User == "" && a.Method != MethodToken && a.Method != MethodAppService {
		errs = append(errs, w+".user: missing")
	}
	errs = append(errs, validateMatrixUser(w, a)...)
	return errs
}

func methodList() string {
	return "password, token, mas_oidc, mas_compat_sso, mas_compat_password, appservice"
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("must be an http or https URL")
	}
	if u.Host == "" {
		return fmt.Errorf("has no host")
	}
	if u.User != nil {
		return fmt.Errorf("must not carry credentials; use the secret fields")
	}
	return nil
}
