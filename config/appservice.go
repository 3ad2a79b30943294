package config

import (
	"fmt"
	"strings"

	promcfg "github.com/prometheus/common/config"
)

// MethodAppService acts with an application service's as_token (the Matrix
// application service API: the token as bearer, ?user_id= to assert the
// identity of a user in the service's namespace). It is how OpenMeet's own
// bot reaches the homeserver (MatrixBotService: MATRIX_APPSERVICE_TOKEN,
// acting as @${MATRIX_APPSERVICE_ID}:${serverName}).
const MethodAppService = "appservice"

// DefaultAppServiceTenant is the id of the tenant that probes the
// deployment-wide application service (see AppService.Tenant).
const DefaultAppServiceTenant = "appservice"

// AppService is the deployment-wide application service, the one OpenMeet's
// bot uses for every tenant.
type AppService struct {
	// ID is the registration's sender_localpart, the user the token acts as
	// by default (env MATRIX_APPSERVICE_ID; the platform uses one value for
	// the registration id and the sender_localpart).
	ID string `yaml:"id" json:"id"`
	// Token / TokenFile: the as_token (env MATRIX_APPSERVICE_TOKEN).
	Token     promcfg.Secret `yaml:"token" json:"token"`
	TokenFile string         `yaml:"token_file" json:"token_file"`
	// Tenant is the id of the tenant mxprobe adds to probe this application
	// service when a token is configured (default "appservice"). Set
	// Disabled to add none (tenants may still use method appservice).
	Tenant   string `yaml:"tenant" json:"tenant"`
	Disabled bool   `yaml:"disabled" json:"disabled"`
}

// Configured reports whether an as_token is known (inline, file or env).
func (a AppService) Configured() bool { return a.Token != "" || a.TokenFile != "" }

func applyAppServiceEnv(c *Config, env func(string) string) {
	a := &c.AppService
	if a.ID == "" {
		a.ID = strings.TrimSpace(env("MATRIX_APPSERVICE_ID"))
	}
	if a.Token == "" && a.TokenFile == "" {
		a.Token = promcfg.Secret(strings.TrimSpace(env("MATRIX_APPSERVICE_TOKEN")))
	}
}

// addAppServiceTenant adds the tenant that watches the deployment-wide
// as_token: a rotated or revoked token stops every room operation of the
// platform, whichever tenant it is for.
func addAppServiceTenant(c *Config) Errors {
	a := &c.AppService
	if !a.Configured() || a.Disabled {
		return nil
	}
	if a.Tenant == "" {
		a.Tenant = DefaultAppServiceTenant
	}
	if src, dup := c.TenantSources[a.Tenant]; dup {
		return Errors{fmt.Sprintf("%s: appservice.tenant: tenant id %q is also defined in the %s (choose another id with appservice.tenant, or set appservice.disabled)", c.File, a.Tenant, src)}
	}
	c.TenantSources[a.Tenant] = "appservice section"
	c.Tenants = append(c.Tenants, Tenant{
		ID:   a.Tenant,
		Name: "Application service",
		Bot:  Account{Method: MethodAppService},
	})
	return nil
}

// applyAppServiceAccount fills an appservice account from the appservice
// section: its token and, by default, its sender as the user.
func (c *Config) applyAppServiceAccount(a *Account) {
	if a.Method != MethodAppService {
		return
	}
	if a.AccessToken == "" && a.AccessTokenFile == "" {
		a.AccessToken, a.AccessTokenFile = c.AppService.Token, c.AppService.TokenFile
	}
	if a.User == "" {
		a.User = c.AppService.ID
	}
}

func validateAppService(c *Config) Errors {
	a := &c.AppService
	var errs Errors
	if a.Token != "" && a.TokenFile != "" {
		errs = append(errs, c.File+": appservice: token and token_file are mutually exclusive")
	}
	if strings.ContainsAny(a.ID, ": @") {
		errs = append(errs, c.File+": appservice.id: a localpart (the registration's sender_localpart), without @ or :")
	}
	return errs
}
