package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Failure classes of the MAS logins: the part of the login that refused.
// Transport failures keep the shared classes (unreachable, timeout, http_5xx),
// so "MAS is down" and "MAS said no" stay apart; the step says which hop.
const (
	ClassDiscovery     probes.Class = "discovery"
	ClassRegistration  probes.Class = "registration"
	ClassUpstreamLogin probes.Class = "upstream_login"
	ClassAuthorize     probes.Class = "authorize"
	ClassAccountLink   probes.Class = "account_link"
	ClassConsent       probes.Class = "consent"
	ClassTokenExchange probes.Class = "token_exchange"
	ClassTokenRefresh  probes.Class = "token_refresh"
	// ClassPolicy: MAS's policy refused the login (a scope it does not
	// allow, the session limit reached): its policy violation page.
	ClassPolicy probes.Class = "policy"
	// ClassTokenRevoke: MAS refused to revoke a replaced session (a step
	// that never fails the run).
	ClassTokenRevoke probes.Class = "token_revoke"
)

// LoginClasses are the classes a run that logs in may report beyond the
// shared ones (probes.SharedClasses): MAS's pages and tokens.
func LoginClasses() []probes.Class {
	return []probes.Class{ClassDiscovery, ClassRegistration, ClassUpstreamLogin, ClassAuthorize, ClassAccountLink,
		ClassConsent, ClassTokenExchange, ClassTokenRefresh, ClassPolicy, ClassTokenRevoke}
}

// Step names of the MAS logins (bounded: they are metric label values).
const (
	StepDiscovery         = "discovery"
	StepRegistration      = "registration"
	StepUpstreamLogin     = "upstream_login"
	StepAuthorize         = "authorize"
	StepMASLogin          = "mas_login"
	StepUpstreamAuthorize = "upstream_authorize"
	StepProviderAuthorize = "provider_authorize"
	StepProviderLogin     = "provider_login"
	StepUpstreamCallback  = "upstream_callback"
	StepAccountLink       = "account_link"
	StepAccountCreate     = "account_create"
	StepConsent           = "consent"
	StepConsentSubmit     = "consent_submit"
	StepRegisterFinish    = "register_finish"
	StepDisplayName       = "display_name"
	StepDisplayNameSubmit = "display_name_submit"
	StepPolicyViolation   = "policy_violation"
	StepTokenRevoke       = "token_revoke"
	StepSSORedirect       = "sso_redirect"
	StepMASPage           = "mas_page"
	StepTokenExchange     = "token_exchange"
	StepTokenLogin        = "token_login"
	StepTokenRefresh      = "token_refresh"
	StepTokenWhoami       = "token_whoami"
	StepCompatLogin       = "compat_login"
)

// Matrix scopes (MSC2967 unstable, and the stable names; never mixed).
const (
	scopeAPIUnstable    = "urn:matrix:org.matrix.msc2967.client:api:*"
	scopeDeviceUnstable = "urn:matrix:org.matrix.msc2967.client:device:"
	scopeAPIStable      = "urn:matrix:client:api:*"
	scopeDeviceStable   = "urn:matrix:client:device:"
)

const (
	masBodyLimit = 1 << 20
	maxHops      = 30
)

// MASMethod is the mas_oidc login: discovery, dynamic client registration,
// authorization code with PKCE S256 through MAS and the upstream provider,
// token exchange, and refresh with rotation. It caches discovery per
// homeserver and the client id per issuer.
type MASMethod struct {
	Config   config.MAS
	Upstream UpstreamAdapter
	// Now is the clock of the caches (time.Now if nil).
	Now func() time.Time

	cache *MASCache
}

// NewMASMethod returns the mas_oidc method for a MAS configuration, with
// caches of its own.
func NewMASMethod(cfg config.MAS) *MASMethod { return NewMASMethodWith(cfg, nil) }

// NewMASMethodWith returns the mas_oidc method for a MAS configuration that
// keeps discovery and client registrations in cache (a new one if nil), so
// a configuration reload does not register a new client.
func NewMASMethodWith(cfg config.MAS, cache *MASCache) *MASMethod {
	if cache == nil {
		cache = NewMASCache()
	}
	return &MASMethod{Config: cfg, Upstream: NewUpstreamAdapter(cfg.Upstream), cache: cache}
}

func (m *MASMethod) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// ttl is the discovery and registration cache lifetime.
func (m *MASMethod) ttl() time.Duration {
	if d := m.Config.DiscoveryTTL.D(); d > 0 {
		return d
	}
	return time.Hour
}

// flowClient is an HTTP client with its own cookie jar (one per login,
// scoped by origin: originJar) that never follows redirects (the hopper
// follows them under the flow's rules), on the manager's transport.
func flowClient(base *http.Client) *http.Client {
	var tr http.RoundTripper
	if base != nil {
		tr = base.Transport
	}
	return &http.Client{Transport: tr, Jar: newOriginJar(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Login implements Method.
func (m *MASMethod) Login(ctx context.Context, mgr *Manager, acct Account, rec *probes.Recorder) (*Session, error) {
	if acct.Password == "" {
		err := probes.Errorf(probes.ClassConfig, "no password configured for the upstream login")
		rec.AddStep(StepUpstreamLogin, 0, err)
		return nil, err
	}
	if m.Config.RedirectURI == "" {
		err := probes.Errorf(probes.ClassConfig, "mas.redirect_uri is not set")
		rec.AddStep(StepRegistration, 0, err)
		return nil, err
	}
	hc := flowClient(mgr.HTTP)

	var meta AuthMetadata
	var detail string
	if err := rec.Step(StepDiscovery, func() error {
		var err error
		meta, detail, err = m.discover(ctx, mgr.HTTP, acct.HomeserverURL)
		return err
	}); err != nil {
		return nil, err
	}
	rec.Note(detail)

	reregistered := false
	for {
		var clientID string
		var cached bool
		if err := rec.Step(StepRegistration, func() error {
			var err error
			clientID, cached, err = m.register(ctx, mgr.HTTP, meta)
			return err
		}); err != nil {
			return nil, err
		}
		if cached {
			rec.Note("cached " + m.Config.ApplicationType() + " client")
		} else {
			rec.Note("registered " + m.Config.ApplicationType() + " client")
		}
		sess, err := m.authorize(ctx, mgr, hc, acct, meta, clientID, cached && !reregistered, rec)
		var uc *unknownClientError
		if err != nil && errors.As(err, &uc) && cached && !reregistered {
			// MAS forgot the client (a database reset): register again, once.
			m.forgetClient(meta.Issuer)
			reregistered = true
			rec.Note("MAS does not know the cached client: registering again")
			continue
		}
		return sess, err
	}
}

// unknownClientError marks MAS answering that it does not know the client.
type unknownClientError struct{ error }

func (e *unknownClientError) Unwrap() error { return e.error }

func (m *MASMethod) oauthConfig(meta AuthMetadata, clientID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:    clientID,
		RedirectURL: m.Config.RedirectURI,
		Endpoint: oauth2.Endpoint{AuthURL: meta.AuthorizationEndpoint, TokenURL: meta.TokenEndpoint,
			AuthStyle: oauth2.AuthStyleInParams},
	}
}

// Scopes are MAS_SCOPES plus the Matrix API scope and the device scope
// (MSC2967 names, or the stable ones; never both).
func (m *MASMethod) Scopes(deviceID string) []string {
	var out []string
	for _, s := range strings.Fields(m.Config.Scopes) {
		if strings.HasPrefix(s, "urn:matrix:") {
			continue // ours are added below, never mixed
		}
		out = append(out, s)
	}
	if m.Config.StableScopes {
		out = append(out, scopeAPIStable)
		if deviceID != "" {
			out = append(out, scopeDeviceStable+deviceID)
		}
	} else {
		out = append(out, scopeAPIUnstable)
		if deviceID != "" {
			out = append(out, scopeDeviceUnstable+deviceID)
		}
	}
	return out
}

func (m *MASMethod) authorize(ctx context.Context, mgr *Manager, hc *http.Client, acct Account,
	meta AuthMetadata, clientID string, cachedClient bool, rec *probes.Recorder) (*Session, error) {
	// 1. The upstream session (the OpenMeet adapter logs in at the platform API).
	if err := m.Upstream.BeforeAuthorize(ctx, hc, acct, rec); err != nil {
		endUpstreamSession(ctx, m.Upstream, hc, acct, rec)
		return nil, err
	}
	defer endUpstreamSession(ctx, m.Upstream, hc, acct, rec)
	oc := m.oauthConfig(meta, clientID)
	oc.Scopes = m.Scopes(acct.DeviceID())
	verifier := oauth2.GenerateVerifier()
	state, nonce := randomToken(), randomToken()
	authURL := oc.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("nonce", nonce), oauth2.SetAuthURLParam("login_hint", acct.Config.Email))

	target, err := url.Parse(m.Config.RedirectURI)
	if err != nil {
		err := probes.Errorf(probes.ClassConfig, "mas.redirect_uri is not a URL")
		rec.AddStep(StepAuthorize, 0, err)
		return nil, err
	}
	h := &hopper{hc: hc, rec: rec, acct: acct, adapter: m.Upstream, target: target,
		origins: map[string]bool{}, cachedClient: cachedClient, provider: m.Config.Upstream.Provider,
		passwordOrigins: passwordOrigins(m.Config.Upstream)}
	if u, err := url.Parse(meta.AuthorizationEndpoint); err == nil {
		h.origins[origin(u)] = true
		h.authPath = u.Path
	}
	if u, err := url.Parse(meta.Issuer); err == nil {
		h.origins[origin(u)] = true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		err := probes.Errorf(ClassDiscovery, "authorization endpoint: bad URL")
		rec.AddStep(StepAuthorize, 0, err)
		return nil, err
	}
	q, err := h.follow(ctx, req)
	if err != nil {
		return nil, err
	}
	if q.Get("state") != state {
		err := probes.Errorf(ClassAuthorize, "the redirect to redirect_uri carries a different state (possible CSRF or mixed-up flows)")
		rec.Fail(h.lastStep, err)
		return nil, err
	}
	code := q.Get("code")
	if code == "" {
		err := probes.Errorf(ClassAuthorize, "the redirect to redirect_uri carries no code")
		rec.Fail(h.lastStep, err)
		return nil, err
	}

	// 6. Token exchange, then whoami.
	var tok *oauth2.Token
	if err := rec.Step(StepTokenExchange, func() error {
		var err error
		tok, err = oc.Exchange(context.WithValue(ctx, oauth2.HTTPClient, tokenClient(mgr.HTTP)), code,
			oauth2.VerifierOption(verifier))
		if err != nil {
			return m.tokenError(ClassTokenExchange, meta.Issuer, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	switch {
	case tok.RefreshToken == "":
		rec.Note("no refresh token issued")
	case !tok.Expiry.IsZero():
		rec.Note("access token for " + time.Until(tok.Expiry).Round(time.Second).String() + ", refresh token issued")
	default:
		rec.Note("refresh token issued")
	}
	sess := &Session{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		DeviceID: acct.DeviceID(), HomeserverURL: acct.HomeserverURL,
		Extra: map[string]string{
			"client_id": clientID, "token_endpoint": meta.TokenEndpoint,
			"authorization_endpoint": meta.AuthorizationEndpoint, "issuer": meta.Issuer,
			"revocation_endpoint": meta.RevocationEndpoint,
		},
	}
	if err := rec.Step(StepTokenWhoami, func() error { return mgr.Whoami(ctx, acct, sess) }); err != nil {
		return nil, err
	}
	return sess, nil
}

// tokenClient is the HTTP client for MAS's JSON endpoints (discovery,
// registration, token, revocation): no cookies, and no redirect followed
// (a code, refresh token or registration never goes to another URL).
func tokenClient(base *http.Client) *http.Client {
	return noRedirects(base)
}

// tokenError classifies an OAuth token endpoint error without echoing its body.
func (m *MASMethod) tokenError(class probes.Class, issuer string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if status >= 500 {
			return &probes.Error{Class: probes.ClassHTTP5xx, Status: status, Err: fmt.Errorf("token endpoint: HTTP %d", status)}
		}
		if status/100 == 3 && re.Response.Request != nil {
			// Not followed (tokenClient): the code, verifier or refresh
			// token never goes to the location.
			return refusedRedirect(re.Response.Request, re.Response)
		}
		if re.ErrorCode == "invalid_client" {
			m.forgetClient(issuer)
		}
		msg := re.ErrorCode
		if msg == "" {
			msg = fmt.Sprintf("HTTP %d", status)
		}
		if re.ErrorDescription != "" {
			msg += ": " + mxclient.Short(re.ErrorDescription)
		}
		return &probes.Error{Class: class, Status: status, Err: fmt.Errorf("token endpoint refused: %s", msg)}
	}
	c := probes.Classify(err)
	if c == probes.ClassInternal {
		c = class
	}
	return &probes.Error{Class: c, Err: fmt.Errorf("token endpoint: %s", redactErr(err))}
}

// Refresh implements Refresher: a refresh_token grant (the pair rotates). A
// failure is recorded as a step that does not fail the run: the manager falls
// back to a full login.
func (m *MASMethod) Refresh(ctx context.Context, mgr *Manager, acct Account, sess *Session, rec *probes.Recorder) (*Session, error) {
	var ns *Session
	err := rec.SoftStep(StepTokenRefresh, func() error {
		clientID, tokenURL := sess.Extra["client_id"], sess.Extra["token_endpoint"]
		if clientID == "" || tokenURL == "" {
			return probes.Errorf(ClassTokenRefresh, "session has no client registration to refresh with")
		}
		oc := &oauth2.Config{ClientID: clientID,
			Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams}}
		ts := oc.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, tokenClient(mgr.HTTP)),
			&oauth2.Token{RefreshToken: sess.RefreshToken, Expiry: time.Unix(1, 0)})
		tok, err := ts.Token()
		if err != nil {
			return m.tokenError(ClassTokenRefresh, sess.Extra["issuer"], err)
		}
		ns = &Session{UserID: sess.UserID, DeviceID: sess.DeviceID, HomeserverURL: sess.HomeserverURL,
			AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
			Extra: sess.Extra}
		return nil
	})
	if err == nil && ns.RefreshToken != sess.RefreshToken {
		rec.Note("refresh token rotated")
	}
	return ns, err
}

// Revoke implements Revoker: it ends the session at MAS's
// revocation_endpoint (RFC 7009; MAS ends the whole OAuth 2.0 session,
// crates/handlers/src/oauth2/revoke.rs, post()). The refresh token is sent,
// as it outlives the access token. MAS answers 200 for a token it no
// longer knows.
func (m *MASMethod) Revoke(ctx context.Context, mgr *Manager, sess *Session) error {
	endpoint, clientID := sess.Extra["revocation_endpoint"], sess.Extra["client_id"]
	if endpoint == "" || clientID == "" {
		return probes.Errorf(ClassTokenRevoke, "MAS advertises no revocation_endpoint: the replaced session stays until it expires")
	}
	form := url.Values{"client_id": {clientID}}
	if sess.RefreshToken != "" {
		form.Set("token", sess.RefreshToken)
		form.Set("token_type_hint", "refresh_token")
	} else {
		form.Set("token", sess.AccessToken)
		form.Set("token_type_hint", "access_token")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return probes.Errorf(ClassDiscovery, "revocation_endpoint is not a URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := tokenClient(mgr.HTTP).Do(req)
	if err != nil {
		return transportError("revocation endpoint", err)
	}
	defer drain(resp)
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var out struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, masBodyLimit)).Decode(&out)
	class := ClassTokenRevoke
	if resp.StatusCode >= 500 {
		class = probes.ClassHTTP5xx
	}
	msg := safeCode(out.Error)
	if msg == "" {
		msg = "no error code"
	}
	return &probes.Error{Class: class, Status: resp.StatusCode,
		Err: fmt.Errorf("revocation endpoint refused (HTTP %d): %s", resp.StatusCode, msg)}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, masBodyLimit))
	resp.Body.Close()
}

// transportError classifies a failed request, naming what without its query.
func transportError(what string, err error) error {
	class := probes.Classify(err)
	if class == probes.ClassInternal {
		class = probes.ClassUnreachable
	}
	return &probes.Error{Class: class, Err: fmt.Errorf("%s: %s", what, redactErr(err))}
}

// redactErr keeps the cause of a transport error but drops the URL (whose
// query may carry a code or state).
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// redactURL renders a URL without its query, fragment or credentials.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return c.String()
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// RegisterMAS adds the MAS login methods for a configuration to m, with
// caches of their own.
func RegisterMAS(m *Manager, cfg config.MAS) {
	for name, meth := range MASMethods(cfg, nil) {
		m.Register(name, meth)
	}
}

// MASMethods returns the MAS login methods (mas_oidc, mas_compat_sso,
// mas_compat_password) for a configuration, sharing cache (a new one if
// nil) so discovery and client registrations outlive a reload.
func MASMethods(cfg config.MAS, cache *MASCache) map[string]Method {
	if cache == nil {
		cache = NewMASCache()
	}
	return map[string]Method{
		config.MethodMASOIDC:           NewMASMethodWith(cfg, cache),
		config.MethodMASCompatSSO:      NewMASCompatSSOMethodWith(cfg, cache),
		config.MethodMASCompatPassword: MASCompatPasswordMethod{},
	}
}
