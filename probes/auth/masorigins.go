package auth

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Origins and secrets of the browser-like MAS flow (docs/mas.md, "Origins
// and secrets"):
//   - the bot's password goes only to the provider origin the configuration
//     names (mas.upstream.origin, else api_url's origin), over https (plain
//     http only on loopback), in the POST body of a form whose action is on
//     the page's own origin;
//   - cookies go back only to the origin that set them (originJar);
//   - MAS's JSON endpoints (discovery, registration, token, revocation)
//     follow no redirect; the flow follows redirects hop by hop, never from
//     https down to plain http (except loopback to loopback), and compat
//     SSO's homeserver may only hand over to MAS.

// originJar is a cookie jar that keeps every origin's cookies apart: a
// cookie goes back only to the scheme, host and port that set it.
// net/http/cookiejar alone scopes cookies as RFC 6265 does, by host name
// without port or scheme (a cookie of a server on 127.0.0.1:8080 would go to
// any other port of 127.0.0.1), and by Domain attribute (OpenMeet sets its
// session cookies for the last two labels of its host, so they would go to
// every subdomain, MAS's included). The flow needs neither: each server
// reads only its own cookies.
type originJar struct {
	mu   sync.Mutex
	jars map[string]*cookiejar.Jar
}

func newOriginJar() *originJar { return &originJar{jars: map[string]*cookiejar.Jar{}} }

func (j *originJar) jar(u *url.URL, create bool) *cookiejar.Jar {
	if u == nil || u.Host == "" {
		return nil
	}
	o := origin(u)
	j.mu.Lock()
	defer j.mu.Unlock()
	jar := j.jars[o]
	if jar == nil && create {
		jar, _ = cookiejar.New(nil)
		j.jars[o] = jar
	}
	return jar
}

// SetCookies implements http.CookieJar.
func (j *originJar) SetCookies(u *url.URL, cookies []*http.Cookie) {
	if jar := j.jar(u, true); jar != nil {
		jar.SetCookies(u, cookies)
	}
}

// Cookies implements http.CookieJar.
func (j *originJar) Cookies(u *url.URL) []*http.Cookie {
	if jar := j.jar(u, false); jar != nil {
		return jar.Cookies(u)
	}
	return nil
}

// origin is scheme://host:port in lower case, with the scheme's default
// port made explicit (https://a.example and https://a.example:443 are one
// origin).
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	if port == "" {
		return scheme + "://" + u.Host
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// secureFor reports whether a secret may travel to u: https, or plain
// http to loopback (config.PlainHTTPHost).
func secureFor(u *url.URL) bool {
	switch strings.ToLower(u.Scheme) {
	case "https":
		return true
	case "http":
		return config.PlainHTTPHost(u.Hostname())
	}
	return false
}

// passwordOrigins are the origins whose login forms may receive the bot's
// password: mas.upstream.origin, else the origin of mas.upstream.api_url.
func passwordOrigins(u config.Upstream) map[string]bool {
	out := map[string]bool{}
	for _, s := range []string{u.Origin, u.APIURL} {
		if s == "" {
			continue
		}
		if p, err := url.Parse(s); err == nil && p.Host != "" {
			out[origin(p)] = true
			break
		}
	}
	return out
}

// checkRedirect applies the flow's rules to a hop from one URL to the next
// (a redirect, a link or a form action): http(s) only, no credentials in
// the URL, and never from https down to plain http unless both ends are
// loopback. The refusal is class bad_response: nothing is sent.
func checkRedirect(from, to *url.URL) error {
	switch strings.ToLower(to.Scheme) {
	case "http", "https":
	default:
		return probes.Errorf(probes.ClassBadResponse, "refusing to go from %s to a %q URL", redactURL(from), safeCode(to.Scheme))
	}
	if to.Host == "" || to.User != nil {
		return probes.Errorf(probes.ClassBadResponse, "refusing to go from %s to a URL without a host or with credentials", redactURL(from))
	}
	if strings.EqualFold(from.Scheme, "https") && strings.EqualFold(to.Scheme, "http") &&
		!(config.PlainHTTPHost(from.Hostname()) && config.PlainHTTPHost(to.Hostname())) {
		return probes.Errorf(probes.ClassBadResponse, "refusing the https → http downgrade from %s to %s", redactURL(from), redactURL(to))
	}
	return nil
}

// checkPasswordForm applies the password rules to a form of the provider's
// page at pageURL: when the form has a password input, or vals (the values
// about to be submitted) carry the bot's password, the page must be on a
// configured provider origin (else class config), served over https or
// loopback http (config), and the form must POST to the page's own origin
// (else bad_response). Forms without the password pass.
func (h *hopper) checkPasswordForm(pageURL *url.URL, f *HTMLForm, vals url.Values) error {
	_, pwInput := f.hasType("password")
	if !pwInput && !carries(vals, string(h.acct.Password)) {
		return nil
	}
	page := origin(pageURL)
	if !h.passwordOrigins[page] {
		allowed := "none: set mas.upstream.origin"
		for o := range h.passwordOrigins {
			allowed = o
		}
		return probes.Errorf(probes.ClassConfig,
			"a login form at %s asks for the bot's password, but the configured provider origin is %s (mas.upstream.origin, or api_url's): the password is not submitted",
			redactURL(pageURL), allowed)
	}
	if !secureFor(pageURL) {
		return probes.Errorf(probes.ClassConfig,
			"the provider's login form at %s is plain http on a non-loopback host: the password is not submitted", redactURL(pageURL))
	}
	act, err := url.Parse(f.Action)
	if err != nil || act.Host == "" {
		return probes.Errorf(probes.ClassBadResponse, "the provider's login form at %s has no usable action: the password is not submitted", redactURL(pageURL))
	}
	if origin(act) != page {
		return probes.Errorf(probes.ClassBadResponse,
			"the provider's login form at %s posts to another origin (%s): the password is not submitted", redactURL(pageURL), mxclient.Short(origin(act)))
	}
	if f.Method != http.MethodPost {
		return probes.Errorf(probes.ClassBadResponse,
			"the provider's login form at %s would put the password in a URL (method GET): not submitted", redactURL(pageURL))
	}
	return nil
}

// carries reports whether any value is the secret.
func carries(vals url.Values, secret string) bool {
	if secret == "" {
		return false
	}
	for _, vs := range vals {
		for _, v := range vs {
			if v == secret {
				return true
			}
		}
	}
	return false
}

// checkNext applies the rules to the request a page leads to (a link
// followed or a form submitted): checkRedirect, and a form POST goes only
// to the page's own origin or to MAS (a provider's form_post answer posts to
// MAS's callback).
func (h *hopper) checkNext(pageURL *url.URL, next *http.Request) error {
	if err := checkRedirect(pageURL, next.URL); err != nil {
		return err
	}
	if next.Method == http.MethodPost && origin(next.URL) != origin(pageURL) && !h.origins[origin(next.URL)] {
		return probes.Errorf(probes.ClassBadResponse, "refusing a form at %s that posts to another origin (%s)",
			redactURL(pageURL), mxclient.Short(origin(next.URL)))
	}
	return nil
}

// checkHandOver is compat SSO's rule: a redirect from the homeserver goes
// to the homeserver or to MAS (mas.public_url's origin, or the issuer
// discovery names), else the run fails with class config before anything
// is sent there.
func (h *hopper) checkHandOver(from, to *url.URL) error {
	if h.homeserver == "" || origin(from) != h.homeserver || h.origins[origin(to)] {
		return nil
	}
	var known []string
	for o := range h.origins {
		if o != h.homeserver {
			known = append(known, o)
		}
	}
	return probes.Errorf(probes.ClassConfig,
		"the homeserver's SSO redirect leads to %s, not to MAS (%s; mas.public_url): not followed",
		mxclient.Short(origin(to)), strings.Join(known, ", "))
}

// noRedirects returns a copy of c that follows no redirect: a 3xx comes
// back as the response. MAS's JSON endpoints never redirect.
func noRedirects(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// redirectRefused is a 3xx answer from an endpoint that must not redirect.
type redirectRefused struct {
	status   int
	from, to string
}

func (e *redirectRefused) Error() string {
	return fmt.Sprintf("%s: HTTP %d redirect to %s not followed", e.from, e.status, e.to)
}

// refusedRedirect describes a 3xx answer (class bad_response) with its
// location, without its query.
func refusedRedirect(req *http.Request, resp *http.Response) error {
	to := "(no location)"
	if l := resp.Header.Get("Location"); l != "" {
		if u, err := req.URL.Parse(l); err == nil {
			to = mxclient.Short(redactURL(u))
		} else {
			to = fmt.Sprintf("%q", mxclient.Short(l))
		}
	}
	return &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode,
		Err: &redirectRefused{status: resp.StatusCode, from: redactURL(req.URL), to: to}}
}
