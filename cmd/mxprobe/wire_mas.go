package main

import (
	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// The MAS login methods (mas_oidc, mas_compat_sso, mas_compat_password),
// configured from the mas section on every (re)load.
func init() {
	managerHooks = append(managerHooks, func(m *auth.Manager, cfg *config.Config) error {
		auth.RegisterMAS(m, cfg.MAS)
		return nil
	})
}
