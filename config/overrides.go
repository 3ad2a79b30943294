package config

import (
	"fmt"
	"sort"
)

// TenantOverride adjusts a tenant mxprobe does not define itself (one from
// TENANTS_B64, whose entries carry no mxprobe settings), or any other.
type TenantOverride struct {
	// MatrixUser is the bot's expected Matrix user (bot.matrix_user): a
	// localpart (a registered handle) or a full user id.
	MatrixUser string `yaml:"matrix_user" json:"matrix_user,omitempty"`
	// Method is the bot's login method (bot.method).
	Method string `yaml:"method" json:"method,omitempty"`
}

// applyOverrides applies tenant_overrides by tenant id, before defaults. An
// id that names no tenant is an error (a skipped TENANTS_B64 entry says so).
func applyOverrides(c *Config) Errors {
	var errs Errors
	ids := make([]string, 0, len(c.TenantOverrides))
	for id := range c.TenantOverrides {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		o := c.TenantOverrides[id]
		t, ok := c.Tenant(id)
		if !ok {
			msg := fmt.Sprintf("%s: tenant_overrides.%s: no such tenant", c.File, id)
			for _, s := range c.Skipped {
				if s.ID == id {
					msg += fmt.Sprintf(" (TENANTS_B64[%d] is skipped: %s)", s.Index, s.Reason)
				}
			}
			errs = append(errs, msg)
			continue
		}
		if o.MatrixUser != "" {
			t.Bot.MatrixUser = o.MatrixUser
		}
		if o.Method != "" {
			t.Bot.Method = o.Method
		}
	}
	return errs
}
