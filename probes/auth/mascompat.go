package auth

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// MAS's compatibility logins: m.login.sso through MAS (mas_compat_sso) and
// m.login.password answered by MAS (mas_compat_password).

// MASCompatSSOMethod is MAS's compatibility SSO login: m.login.sso's redirect
// through MAS and the upstream provider, a consent POST, then m.login.token
// with the loginToken MAS appended to the redirect URL.
type MASCompatSSOMethod struct {
	Config   config.MAS
	Upstream UpstreamAdapter

	cache  *MASCache
	discMu sync.Mutex
	disc   *MASMethod // discovery (and its cache) when mas.public_url is not set
}

// masOrigins are the origins the homeserver may hand the login over to:
// mas.public_url's, else those of the issuer and authorization endpoint the
// homeserver's auth_metadata names (a recorded discovery step).
func (c *MASCompatSSOMethod) masOrigins(ctx context.Context, mgr *Manager, acct Account, rec *probes.Recorder) (map[string]bool, error) {
	out := map[string]bool{}
	if c.Config.PublicURL != "" {
		u, err := url.Parse(c.Config.PublicURL)
		if err != nil || u.Host == "" {
			err := probes.Errorf(probes.ClassConfig, "mas.public_url is not a URL")
			rec.AddStep(StepSSORedirect, 0, err)
			return nil, err
		}
		out[origin(u)] = true
		return out, nil
	}
	c.discMu.Lock()
	if c.disc == nil {
		c.disc = NewMASMethodWith(c.Config, c.cache)
	}
	d := c.disc
	c.discMu.Unlock()
	var meta AuthMetadata
	var detail string
	if err := rec.Step(StepDiscovery, func() error {
		var err error
		meta, detail, err = d.discover(ctx, mgr.HTTP, acct.HomeserverURL)
		return err
	}); err != nil {
		return nil, err
	}
	rec.Note(detail + ": MAS's origin for the SSO hand-over")
	for _, s := range []string{meta.Issuer, meta.AuthorizationEndpoint} {
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			out[origin(u)] = true
		}
	}
	return out, nil
}

// NewMASCompatSSOMethod returns the mas_compat_sso method.
func NewMASCompatSSOMethod(cfg config.MAS) *MASCompatSSOMethod {
	return NewMASCompatSSOMethodWith(cfg, nil)
}

// NewMASCompatSSOMethodWith returns the mas_compat_sso method whose
// discovery (without mas.public_url) uses cache (a new one if nil).
func NewMASCompatSSOMethodWith(cfg config.MAS, cache *MASCache) *MASCompatSSOMethod {
	return &MASCompatSSOMethod{Config: cfg, Upstream: NewUpstreamAdapter(cfg.Upstream), cache: cache}
}

// Login implements Method.
func (c *MASCompatSSOMethod) Login(ctx context.Context, mgr *Manager, acct Account, rec *probes.Recorder) (*Session, error) {
	if acct.Password == "" {
		err := probes.Errorf(probes.ClassConfig, "no password configured for the upstream login")
		rec.AddStep(StepUpstreamLogin, 0, err)
		return nil, err
	}
	masOrigins, err := c.masOrigins(ctx, mgr, acct, rec)
	if err != nil {
		return nil, err
	}
	hc := flowClient(mgr.HTTP)
	if err := c.Upstream.BeforeAuthorize(ctx, hc, acct, rec); err != nil {
		endUpstreamSession(ctx, c.Upstream, hc, acct, rec)
		return nil, err
	}
	defer endUpstreamSession(ctx, c.Upstream, hc, acct, rec)
	redirectURL := c.Config.CompatRedirectURL
	if redirectURL == "" {
		redirectURL = c.Config.RedirectURI
	}
	if redirectURL == "" {
		redirectURL = "http://localhost/mxprobe/sso"
	}
	target, err := url.Parse(redirectURL)
	if err != nil || target.Host == "" {
		err := probes.Errorf(probes.ClassConfig, "mas.compat_redirect_url is not a URL")
		rec.AddStep(StepSSORedirect, 0, err)
		return nil, err
	}
	hs, err := url.Parse(strings.TrimRight(acct.HomeserverURL, "/"))
	if err != nil || hs.Host == "" {
		err := probes.Errorf(probes.ClassConfig, "homeserver URL: not a URL")
		rec.AddStep(StepSSORedirect, 0, err)
		return nil, err
	}
	start := *hs
	start.Path += "/_matrix/client/v3/login/sso/redirect"
	start.RawQuery = url.Values{"redirectUrl": {target.String()}}.Encode()
	masOrigins[origin(hs)] = true
	h := &hopper{hc: hc, rec: rec, acct: acct, adapter: c.Upstream, target: target,
		origins: masOrigins, homeserver: origin(hs), provider: c.Config.Upstream.Provider,
		passwordOrigins: passwordOrigins(c.Config.Upstream)}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, start.String(), nil)
	if err != nil {
		err := probes.Errorf(probes.ClassConfig, "homeserver URL: not a URL")
		rec.AddStep(StepSSORedirect, 0, err)
		return nil, err
	}
	q, err := h.follow(ctx, req)
	if err != nil {
		return nil, err
	}
	loginToken := q.Get("loginToken")
	if loginToken == "" {
		err := probes.Errorf(ClassAuthorize, "the redirect to redirectUrl carries no loginToken")
		rec.Fail(h.lastStep, err)
		return nil, err
	}
	var sess *Session
	if err := rec.Step(StepTokenLogin, func() error {
		cli, err := mxclient.New(acct.HomeserverURL, mgr.HTTP)
		if err != nil {
			return err
		}
		var resp *mautrix.RespLogin
		err = mxclient.Call(ctx, nil, func(ctx context.Context) error {
			var err error
			resp, err = cli.Login(ctx, &mautrix.ReqLogin{
				Type: mautrix.AuthTypeToken, Token: loginToken,
				DeviceID: id.DeviceID(acct.DeviceID()), InitialDeviceDisplayName: "mxprobe",
			})
			return err
		})
		if err != nil {
			return err
		}
		if resp.AccessToken == "" {
			return probes.Errorf(probes.ClassBadResponse, "m.login.token answered without an access_token")
		}
		sess = &Session{UserID: string(resp.UserID), AccessToken: resp.AccessToken, DeviceID: string(resp.DeviceID),
			RefreshToken: resp.RefreshToken, HomeserverURL: acct.HomeserverURL}
		if resp.ExpiresInMS > 0 {
			sess.Expiry = time.Now().Add(time.Duration(resp.ExpiresInMS) * time.Millisecond)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := rec.Step(StepTokenWhoami, func() error { return mgr.Whoami(ctx, acct, sess) }); err != nil {
		return nil, err
	}
	return sess, nil
}

// MASCompatPasswordMethod is m.login.password served by MAS's compatibility
// layer (where the deployment enables MAS passwords).
type MASCompatPasswordMethod struct{}

// Login implements Method.
func (MASCompatPasswordMethod) Login(ctx context.Context, mgr *Manager, acct Account, rec *probes.Recorder) (*Session, error) {
	var sess *Session
	err := rec.Step(StepCompatLogin, func() error {
		var err error
		sess, err = PasswordLogin(ctx, mgr, acct)
		return err
	})
	return sess, err
}
