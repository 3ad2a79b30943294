package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// hopper follows MAS's redirect chain by hand, one timed step per request,
// filling the forms MAS (and, with the form adapter, the provider) shows,
// until a redirect to the target (the client's redirect URI) appears. The
// target itself is never fetched.
type hopper struct {
	hc      *http.Client
	rec     *probes.Recorder
	acct    Account
	adapter UpstreamAdapter
	target  *url.URL
	// origins are the origins (origin()) of MAS (and, for compat SSO, the
	// homeserver); anything else is the upstream provider.
	origins map[string]bool
	// homeserver is compat SSO's homeserver origin: its redirects may lead
	// only to origins (checkHandOver).
	homeserver string
	// passwordOrigins are the origins whose login forms may receive the
	// bot's password (passwordOrigins()).
	passwordOrigins map[string]bool
	authPath        string

	// provider chooses among the login page's upstream providers (id or
	// name, case-insensitive; mas.upstream.provider).
	provider string

	lastStep string
	// cachedClient: the client id came from the cache (a 400 at /authorize
	// may mean MAS forgot it).
	cachedClient bool
	formLogins   int
	// seen counts the MAS pages met by kind (a form shown again after its
	// submission carries MAS's refusal).
	seen map[pageKind]int
	// targetQuery is set when a page posts to the redirect URI itself.
	targetQuery url.Values
}

// isTarget reports whether u is the redirect URI (same origin and path).
func (h *hopper) isTarget(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, h.target.Scheme) && strings.EqualFold(u.Host, h.target.Host) &&
		strings.TrimRight(u.Path, "/") == strings.TrimRight(h.target.Path, "/")
}

// hop names the request for its step.
func (h *hopper) hop(u *url.URL, method string) string {
	if !h.origins[origin(u)] {
		if method == http.MethodPost {
			return StepProviderLogin
		}
		return StepProviderAuthorize
	}
	p := u.Path
	switch {
	case h.authPath != "" && p == h.authPath:
		return StepAuthorize
	case strings.Contains(p, "/login/sso/redirect"):
		return StepSSORedirect
	case strings.Contains(p, "/upstream/authorize/"):
		return StepUpstreamAuthorize
	case strings.Contains(p, "/upstream/callback/"):
		return StepUpstreamCallback
	case strings.Contains(p, "/register/steps/") && strings.HasSuffix(p, "/display-name"):
		if method == http.MethodPost {
			return StepDisplayNameSubmit
		}
		return StepDisplayName
	case strings.Contains(p, "/register/steps/"):
		return StepRegisterFinish
	case strings.Contains(p, "/upstream/link/"), strings.Contains(p, "/register"):
		if method == http.MethodPost {
			return StepAccountCreate
		}
		return StepAccountLink
	case strings.Contains(p, "/consent/"), strings.Contains(p, "/complete-compat-sso/"):
		if method == http.MethodPost {
			return StepConsentSubmit
		}
		return StepConsent
	case strings.HasSuffix(p, "/login"):
		return StepMASLogin
	}
	return StepMASPage
}

// hopClass is the failure class of a refusal at that hop.
func hopClass(step string) probes.Class {
	switch step {
	case StepProviderAuthorize, StepProviderLogin:
		return ClassUpstreamLogin
	case StepAccountLink, StepAccountCreate, StepRegisterFinish, StepDisplayName, StepDisplayNameSubmit:
		return ClassAccountLink
	case StepPolicyViolation:
		return ClassPolicy
	case StepConsent, StepConsentSubmit:
		return ClassConsent
	}
	return ClassAuthorize
}

// loginRequired are OAuth errors meaning "the upstream session is missing".
var loginRequired = map[string]bool{
	"login_required": true, "interaction_required": true, "account_selection_required": true,
}

// follow performs req and what follows until the target is reached; it
// returns the target's query parameters.
func (h *hopper) follow(ctx context.Context, req *http.Request) (url.Values, error) {
	h.seen = map[pageKind]int{}
	for i := 0; i < maxHops; i++ {
		step := h.hop(req.URL, req.Method)
		h.lastStep = step
		t0 := time.Now()
		resp, err := h.hc.Do(req)
		if err != nil {
			e := transportError(step+" "+req.Method+" "+req.URL.Path, err)
			h.rec.AddStep(step, time.Since(t0), e)
			return nil, e
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, masBodyLimit))
		drain(resp)
		d := time.Since(t0)
		if rerr != nil {
			e := transportError(step+" "+req.URL.Path, rerr)
			h.rec.AddStep(step, d, e)
			return nil, e
		}
		where := req.Method + " " + req.URL.Path
		switch {
		case resp.StatusCode/100 == 3:
			loc, err := resp.Location()
			if err != nil {
				e := &probes.Error{Class: hopClass(step), Status: resp.StatusCode,
					Err: fmt.Errorf("%s: redirect without a usable Location", where)}
				h.rec.AddStep(step, d, e)
				return nil, e
			}
			if code := loc.Query().Get("error"); code != "" {
				class := hopClass(step)
				if loginRequired[code] || step == StepProviderAuthorize || step == StepProviderLogin {
					class = ClassUpstreamLogin
				}
				msg := fmt.Sprintf("%s redirected with error=%s", where, safeCode(code))
				if desc := loc.Query().Get("error_description"); desc != "" {
					msg += ": " + mxclient.Short(desc)
				}
				e := &probes.Error{Class: class, Status: resp.StatusCode, Err: fmt.Errorf("%s", msg)}
				h.rec.AddStep(step, d, e)
				return nil, e
			}
			if h.isTarget(loc) {
				h.rec.AddStep(step, d, nil)
				h.rec.SetStatus(resp.StatusCode)
				h.rec.Note(where + " → redirect_uri")
				return loc.Query(), nil
			}
			if err := h.checkHandOver(req.URL, loc); err != nil {
				h.rec.AddStep(step, d, withStatus(err, resp.StatusCode))
				return nil, err
			}
			if err := checkRedirect(req.URL, loc); err != nil {
				h.rec.AddStep(step, d, withStatus(err, resp.StatusCode))
				return nil, err
			}
			h.rec.AddStep(step, d, nil)
			h.rec.SetStatus(resp.StatusCode)
			h.rec.Note(where + " → " + loc.Path)
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
			if err != nil {
				e := probes.Errorf(hopClass(step), "%s: redirect to an unusable URL", where)
				h.rec.Fail(step, e)
				return nil, e
			}
		case resp.StatusCode == http.StatusOK && isHTML(resp):
			next, pstep, note, err := h.page(ctx, step, req.URL, body)
			if pstep != "" {
				step = pstep
				h.lastStep = step
			}
			if err == nil && next != nil {
				err = h.checkNext(req.URL, next)
			}
			if err != nil {
				if pe, ok := err.(*probes.Error); ok {
					pe.Status = resp.StatusCode
				}
				h.rec.AddStep(step, d, err)
				return nil, err
			}
			h.rec.AddStep(step, d, nil)
			h.rec.SetStatus(resp.StatusCode)
			h.rec.Note(where + ": " + note)
			if h.targetQuery != nil {
				return h.targetQuery, nil
			}
			req = next
		default:
			class := hopClass(step)
			if resp.StatusCode >= 500 {
				class = probes.ClassHTTP5xx
			}
			msg := fmt.Sprintf("%s: HTTP %d", where, resp.StatusCode)
			if t := pageTitle(req.URL, body); t != "" {
				msg += ": " + mxclient.Short(t)
			}
			var err error = &probes.Error{Class: class, Status: resp.StatusCode, Err: fmt.Errorf("%s", msg)}
			if step == StepAuthorize && resp.StatusCode == http.StatusBadRequest && h.cachedClient {
				// Perhaps MAS forgot the cached client: the caller registers
				// again and retries, so this hop does not fail the run.
				err = &unknownClientError{err}
				_ = h.rec.SoftStep(step, func() error { return err })
				return nil, err
			}
			h.rec.AddStep(step, d, err)
			return nil, err
		}
	}
	e := probes.Errorf(hopClass(h.lastStep), "more than %d hops without reaching redirect_uri", maxHops)
	h.rec.Fail(h.lastStep, e)
	return nil, e
}

// withStatus sets the HTTP status of a classified error.
func withStatus(err error, status int) error {
	if pe, ok := err.(*probes.Error); ok {
		pe.Status = status
	}
	return err
}

// safeCode keeps an OAuth error code printable and short (it comes from outside).
func safeCode(s string) string {
	var b strings.Builder
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || r == '_' || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}

func isHTML(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/html" || mt == "application/xhtml+xml"
}

func pageTitle(u *url.URL, body []byte) string {
	if len(body) == 0 || !bytes.Contains(body, []byte("<")) {
		return ""
	}
	_, title := parseForms(body, u)
	return title
}

func formRequest(ctx context.Context, f *HTMLForm, vals url.Values) (*http.Request, error) {
	if f.postsTo("/logout") {
		// Never: MAS's logout form ends the browser session and resumes the
		// pending action, which leads back to the same page.
		return nil, probes.Errorf(ClassPolicy, "refusing to submit a logout form")
	}
	if f.Method != http.MethodPost {
		u, err := url.Parse(f.Action)
		if err != nil {
			return nil, probes.Errorf(probes.ClassBadResponse, "form action is not a URL")
		}
		u.RawQuery = vals.Encode()
		return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.Action, strings.NewReader(vals.Encode()))
	if err != nil {
		return nil, probes.Errorf(probes.ClassBadResponse, "form action is not a URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// UpstreamAdapter authenticates the bot at the upstream OIDC provider.
type UpstreamAdapter interface {
	// BeforeAuthorize runs before the authorization request; the OpenMeet
	// adapter logs in at the platform API here (cookies land in hc's jar),
	// recording its own step.
	BeforeAuthorize(ctx context.Context, hc *http.Client, acct Account, rec *probes.Recorder) error
	// FillForm fills the login form the provider shows, or refuses.
	FillForm(f *HTMLForm, acct Account) (url.Values, error)
}

// NewUpstreamAdapter returns the adapter a configuration names.
func NewUpstreamAdapter(u config.Upstream) UpstreamAdapter {
	if u.Adapter == config.UpstreamForm {
		return &FormAdapter{UsernameField: u.UsernameField, PasswordField: u.PasswordField}
	}
	return &OpenMeetAdapter{APIURL: u.APIURL, TenantID: u.TenantHeader}
}

// OpenMeetAdapter logs the bot in at the platform with
// POST {api}/api/v1/auth/email/login (header x-tenant-id), which sets the
// session cookies the platform's OIDC provider reads.
type OpenMeetAdapter struct {
	APIURL string
	// TenantID overrides the x-tenant-id header (default: the tenant id).
	TenantID string

	logins platformTokens // each flow's platform login, until logged out
}

// BeforeAuthorize implements UpstreamAdapter.
func (o *OpenMeetAdapter) BeforeAuthorize(ctx context.Context, hc *http.Client, acct Account, rec *probes.Recorder) error {
	var status int
	err := rec.Step(StepUpstreamLogin, func() error {
		if o.APIURL == "" {
			return probes.Errorf(probes.ClassConfig, "mas.upstream.api_url is not set")
		}
		tenant := o.TenantID
		if tenant == "" {
			tenant = acct.Tenant
		}
		body, _ := json.Marshal(map[string]string{"email": acct.Config.Email, "password": string(acct.Password)})
		u := strings.TrimRight(o.APIURL, "/") + "/api/v1/auth/email/login"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil || req.URL.Host == "" {
			return probes.Errorf(probes.ClassConfig, "mas.upstream.api_url is not a URL")
		}
		if !secureFor(req.URL) {
			// The origin rule (masorigins.go): the password goes over https,
			// plain http only to loopback.
			return probes.Errorf(probes.ClassConfig,
				"mas.upstream.api_url %s is plain http on a non-loopback host: the bot's password is sent only over https", redactURL(req.URL))
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("x-tenant-id", tenant)
		resp, err := hc.Do(req)
		if err != nil {
			return transportError("platform login", err)
		}
		if resp.StatusCode/100 == 2 {
			if tok := readPlatformToken(resp); tok != "" {
				rec.Scrub(tok)
				o.logins.put(hc, platformLogin{token: tok, tenant: tenant})
			}
		}
		drain(resp)
		status = resp.StatusCode
		if ctx.Err() != nil { // the answer's body outlasted the run's deadline
			return probes.WithClass(probes.ClassTimeout, fmt.Errorf("platform login: reading the answer: %w", ctx.Err()))
		}
		switch {
		case status >= 500:
			return &probes.Error{Class: probes.ClassHTTP5xx, Status: status, Err: fmt.Errorf("platform login: HTTP %d", status)}
		case status == http.StatusTooManyRequests:
			return &probes.Error{Class: probes.ClassRateLimited, Status: status, Err: fmt.Errorf("platform login: rate limited (HTTP 429)")}
		case status/100 == 3:
			return &probes.Error{Class: probes.ClassBadResponse, Status: status, Err: fmt.Errorf("platform login: unexpected redirect (HTTP %d)", status)}
		case status/100 != 2:
			return &probes.Error{Class: ClassUpstreamLogin, Status: status,
				Err: fmt.Errorf("platform refused the bot's email login (HTTP %d): wrong password or unknown bot email", status)}
		}
		if len(hc.Jar.Cookies(req.URL)) == 0 {
			return &probes.Error{Class: ClassUpstreamLogin, Status: status, Err: fmt.Errorf("platform login set no session cookie")}
		}
		return nil
	})
	if err == nil {
		rec.SetStatus(status)
		rec.Note("POST /api/v1/auth/email/login")
	}
	return err
}

// FillForm implements UpstreamAdapter: the OpenMeet login happens before the
// flow, so a login form at the provider means the session was not accepted.
func (o *OpenMeetAdapter) FillForm(*HTMLForm, Account) (url.Values, error) {
	return nil, probes.Errorf(ClassUpstreamLogin, "the provider shows a login form: it did not accept the platform session")
}

// FormAdapter fills a generic HTML login form (username or email, password,
// and the hidden fields such as a CSRF token) on the provider's page.
type FormAdapter struct {
	UsernameField, PasswordField string
}

// BeforeAuthorize implements UpstreamAdapter (nothing to do before).
func (*FormAdapter) BeforeAuthorize(context.Context, *http.Client, Account, *probes.Recorder) error {
	return nil
}

// FillForm implements UpstreamAdapter.
func (a *FormAdapter) FillForm(f *HTMLForm, acct Account) (url.Values, error) {
	pw := a.PasswordField
	if pw == "" {
		pw, _ = f.hasType("password")
	}
	if pw == "" || !f.has(pw) {
		return nil, probes.Errorf(ClassUpstreamLogin, "the provider's page has no password input")
	}
	user := a.UsernameField
	if user == "" {
		if n, ok := f.hasType("email"); ok {
			user = n
		} else {
			user = "username"
		}
	}
	if !f.has(user) {
		return nil, probes.Errorf(ClassUpstreamLogin, "the provider's login form has no %q input", user)
	}
	vals := f.hidden()
	login := acct.Config.Email
	if login == "" || strings.Contains(strings.ToLower(user), "user") {
		if acct.Config.User != "" && !strings.Contains(strings.ToLower(user), "mail") {
			login = acct.Config.User
		}
	}
	vals.Set(user, login)
	vals.Set(pw, string(acct.Password))
	return vals, nil
}
