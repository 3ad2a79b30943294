package auth

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeLogin is the login probe type's name.
const TypeLogin = "login"

// Steps of login runs besides the login method's own (LoginSteps).
const (
	StepLogin  = "login"
	StepWhoami = "whoami"
)

// LoginType is the login probe type: per tenant, every minute (every 5
// minutes when a tenant logs in through MAS), with a full login every
// login.full_login_interval and whoami in between; a configuration
// without probes gets one. Its settings live under the probe's `login:`
// key. Each full login by password counts against the homeserver's
// rc_login.address, once per full-login interval.
func LoginType() probetype.Type {
	return probetype.Define(probetype.Def[LoginSettings]{
		Name: TypeLogin, PerTenant: true, Schedule: "@every 1m", Timeout: 30 * time.Second,
		Default:         true,
		SettingsKey:     "login",
		DefaultSchedule: config.MASLoginSchedule,
		Steps:           append(LoginSteps(), StepWhoami),
		Classes:         append(probes.SharedClasses(), LoginClasses()...),
		Decode:          DecodeLoginSettings,
		New: func(in probetype.Inputs, s *LoginSettings) (probes.Prober, error) {
			m, err := probetype.Need[*Manager](in)
			if err != nil {
				return nil, err
			}
			return &LoginProbe{Name: in.Name, Manager: m, Tenants: in.Tenants, FullLoginInterval: s.FullLoginInterval.D()}, nil
		},
		// Only password logins reach the homeserver's /login (MAS answers
		// the others, within its own budget).
		Costs: func(_ *config.Config, _ *config.Probe, s *LoginSettings, t *config.Tenant) []config.Cost {
			if t.Bot.Method != config.MethodPassword {
				return nil
			}
			return []config.Cost{{Limiter: "rc_login.address", N: 1, Every: s.FullLoginInterval.D()}}
		},
	})
}

// LoginSettings configure the login probe.
type LoginSettings struct {
	// FullLoginInterval is how often the probe logs a tenant's bot in
	// afresh; the runs in between prove the session with whoami (and a
	// refresh when it is about to expire). 0 derives it from the login
	// budgets and the number of tenants (config.DefaultFullLoginInterval,
	// at least 1h).
	FullLoginInterval config.Duration `yaml:"full_login_interval" json:"full_login_interval"`
}

// DecodeLoginSettings decodes the settings of login probe p from n (nil:
// all defaults), applies the defaults and validates them.
func DecodeLoginSettings(c *config.Config, p *config.Probe, n *yaml.Node) (*LoginSettings, error) {
	s, w, err := probetype.DecodeInto[LoginSettings](c, p, n, "login")
	if err != nil {
		return nil, err
	}
	if s.FullLoginInterval < 0 {
		return nil, fmt.Errorf("%s: login.full_login_interval: must be positive", w)
	}
	if s.FullLoginInterval == 0 {
		s.FullLoginInterval = config.Duration(config.DefaultFullLoginInterval(c, p))
	}
	return s, nil
}

// LoginSteps are the steps a login may record: the homeserver's /login,
// the login budget's wait, a resumed session, and MAS's hops.
func LoginSteps() []string {
	return []string{StepLogin, StepLoginBudgetWait, StepSessionResume, StepUpstreamLogout,
		StepDiscovery, StepRegistration, StepUpstreamLogin, StepAuthorize, StepMASLogin, StepUpstreamAuthorize,
		StepProviderAuthorize, StepProviderLogin, StepUpstreamCallback, StepAccountLink, StepAccountCreate,
		StepConsent, StepConsentSubmit, StepRegisterFinish, StepDisplayName, StepDisplayNameSubmit,
		StepPolicyViolation, StepTokenRevoke, StepSSORedirect, StepMASPage, StepTokenExchange, StepTokenLogin,
		StepTokenRefresh, StepTokenWhoami, StepCompatLogin}
}
