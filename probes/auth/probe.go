package auth

import (
	"context"

	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
)

// LoginProbe logs a tenant's bot in afresh (every hop a step) and proves the
// token with /account/whoami. It uses a device of its own ("login" role), so
// it never invalidates the session other probes share.
type LoginProbe struct {
	Name    string
	Manager *Manager
	Config  *config.Config
}

// Run implements probes.Prober.
func (p *LoginProbe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, config.TypeLogin, tenant)
	t, ok := p.Config.Tenant(tenant)
	if !ok {
		rec.AddStep("login", 0, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant))
		return rec.Finish()
	}
	acct, err := NewAccount(t, "login", t.Bot)
	if err != nil {
		rec.AddStep("login", 0, err)
		return rec.Finish()
	}
	sess, err := p.Manager.Login(ctx, acct, rec)
	if err != nil {
		return rec.Finish()
	}
	_ = rec.Step("whoami", func() error { return p.Manager.Whoami(ctx, acct, sess) })
	return rec.Finish()
}
