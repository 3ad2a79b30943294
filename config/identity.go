package config

import "strings"

// OpenMeetLocalpart is the Matrix localpart OpenMeet's OIDC provider makes
// for a user without a registered handle: preferred_username is
// "<lower(slug)>_<lower(tenantId)>" (openmeet-api src/oidc/services/oidc.service.ts,
// the preferred_username claim), and MAS imports it as the localpart
// (matrix-config/mas-config.gomplate.yaml, localpart "require").
func OpenMeetLocalpart(slug, tenantID string) string {
	return strings.ToLower(slug) + "_" + strings.ToLower(tenantID)
}

// applyMatrixUsers sets the expected Matrix user of bots that log in
// through MAS with the openmeet adapter: under that adapter a bot's user is
// the platform's slug, whichever way it was given (TENANTS_B64, a file
// tenant's bot.user, or the default openmeet-bot-<id>), because that is how
// OpenMeet operators know their bots, and the provider names the Matrix user
// after slug and tenant. A full user id (@localpart:server) is taken as
// stated; matrix_user overrides all (a registered handle, or another
// provider's rule).
func applyMatrixUsers(c *Config) {
	if c.MAS.Upstream.Adapter != UpstreamOpenMeet {
		return
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		a := &t.Bot
		if a.MatrixUser != "" || a.User == "" || strings.HasPrefix(a.User, "@") {
			continue
		}
		if a.Method != MethodMASOIDC && a.Method != MethodMASCompatSSO {
			continue
		}
		tenantID := t.ID
		if c.MAS.Upstream.TenantHeader != "" {
			tenantID = c.MAS.Upstream.TenantHeader
		}
		a.MatrixUser = OpenMeetLocalpart(a.User, tenantID)
	}
}

func validateMatrixUser(w string, a *Account) Errors {
	for _, f := range []struct{ name, v string }{{"matrix_user", a.MatrixUser}, {"user", a.User}} {
		if f.v == "" {
			continue
		}
		if strings.HasPrefix(f.v, "@") {
			if local, server, ok := strings.Cut(f.v[1:], ":"); !ok || local == "" || server == "" {
				return Errors{w + "." + f.name + ": a full user id is @localpart:server"}
			}
		} else if strings.ContainsAny(f.v, ":") && (f.name == "matrix_user" || a.Method == MethodAppService) {
			return Errors{w + "." + f.name + ": a localpart (no ':') or a full user id starting with @"}
		}
	}
	return nil
}
