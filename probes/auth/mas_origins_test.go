package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Hostile servers on loopback against the MAS flow's origin rules
// (docs/mas.md, "Origins and secrets"): in none may the bot's password, a
// cookie or a token reach the other host, and each run fails with a clear
// class. Every server logs what it receives; the assertions read that log.

// loggedReq is what a server received.
type loggedReq struct {
	Method, Path, Query, Cookie, Authorization, Body string
}

// logServer is a loopback server that logs every request before handling it.
type logServer struct {
	srv *httptest.Server
	URL string

	mu  sync.Mutex
	log []loggedReq
}

func newLogServer(t *testing.T, useTLS bool, h http.HandlerFunc) *logServer {
	t.Helper()
	s := &logServer{}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		s.mu.Lock()
		s.log = append(s.log, loggedReq{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Cookie: r.Header.Get("Cookie"), Authorization: r.Header.Get("Authorization"), Body: string(b)})
		s.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		h(w, r)
	}))
	if useTLS {
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	s.URL = s.srv.URL
	t.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
	return s
}

func (s *logServer) requests() []loggedReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]loggedReq(nil), s.log...)
}

func (s *logServer) port() string {
	u, _ := url.Parse(s.URL)
	return u.Port()
}

// assertGotNoSecret fails when the server received a cookie, an
// Authorization header, a request to /steal, or any of the secrets (the
// bot's password unless allowPassword) anywhere (path, query, body).
func (s *logServer) assertGotNoSecret(t *testing.T, name string, allowPassword bool, secrets ...string) {
	t.Helper()
	for _, r := range s.requests() {
		if r.Cookie != "" || r.Authorization != "" || r.Path == "/steal" {
			t.Errorf("%s received %s %s with cookie %q, authorization %q", name, r.Method, r.Path, r.Cookie, r.Authorization)
		}
		if !allowPassword {
			secrets = append(secrets, botPassword)
		}
		for _, sec := range secrets {
			if strings.Contains(r.Path+"?"+r.Query+" "+r.Body, sec) || strings.Contains(r.Path+"?"+r.Query+" "+r.Body, url.QueryEscape(sec)) {
				t.Errorf("%s received the secret %q in %s %s", name, sec, r.Method, r.Path)
			}
		}
	}
}

// stealPage is a login page whose password form posts to its own /steal.
const stealPage = `<!DOCTYPE html><html><head><title>Sign in</title></head><body>
<h1>Sign in</h1>
<form method="post" action="/steal">
<input type="hidden" name="csrf" value="c">
<input type="email" name="email"><input type="password" name="password">
<button type="submit" name="go" value="1">Sign in</button></form></body></html>`

// assertNoForeign fails when an honest server received any of the
// secrets of another server (in a cookie, path, query or body); its own
// cookies and tokens may come back to it.
func (s *logServer) assertNoForeign(t *testing.T, name string, secrets ...string) {
	t.Helper()
	for _, r := range s.requests() {
		for _, sec := range secrets {
			if strings.Contains(r.Cookie+" "+r.Path+"?"+r.Query+" "+r.Body, sec) {
				t.Errorf("%s received the secret %q in %s %s", name, sec, r.Method, r.Path)
			}
		}
	}
}

func servePage(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = io.WriteString(w, body)
}

// Cookie values the hostile tests' honest servers set; none may reach
// another origin.
const (
	masCookieSecret      = "mas-browser-cookie-secret"
	platformCookieSecret = "platform-session-cookie-secret"
)

// fakeMAS answers discovery (as homeserver and MAS at once), registration,
// and sends /authorize (after setting its browser cookie) to authorize.
func fakeMAS(t *testing.T, useTLS bool, authorize http.HandlerFunc) *logServer {
	return newLogServer(t, useTLS, func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host
		if useTLS {
			base = "https://" + r.Host
		}
		switch r.URL.Path {
		case "/_matrix/client/v1/auth_metadata", "/.well-known/openid-configuration":
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{
				"issuer": base + "/", "authorization_endpoint": base + "/authorize",
				"token_endpoint": base + "/oauth2/token", "registration_endpoint": base + "/oauth2/registration",
				"code_challenge_methods_supported": []string{"S256"},
			})
		case "/oauth2/registration":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"client_id":"01HOSTILETESTCLIENT"}`)
		case "/authorize":
			http.SetCookie(w, &http.Cookie{Name: "mas_browser", Value: masCookieSecret, Path: "/", HttpOnly: true})
			authorize(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// hostileEnv builds a manager whose client resolves the given host names
// to loopback (so a test can name "another host") and trusts TLS test
// servers.
func hostileClient(t *testing.T, names map[string]bool, tlsServers ...*logServer) *http.Client {
	t.Helper()
	httpc := mxclient.NewHTTPClient()
	tr := httpc.Transport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err == nil && names[host] {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return d.DialContext(ctx, network, addr)
	}
	if len(tlsServers) > 0 {
		pool := x509.NewCertPool()
		for _, s := range tlsServers {
			pool.AddCert(s.srv.Certificate())
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	httpc.Transport = tr
	t.Cleanup(httpc.CloseIdleConnections)
	return httpc
}

// hostileLogin runs one login of method against homeserver hs with cfg.
func hostileLogin(t *testing.T, httpc *http.Client, cfg config.MAS, hs, method string) probes.Result {
	t.Helper()
	if cfg.RedirectURI == "" {
		cfg.RedirectURI = "http://localhost:9005/auth/matrix/callback"
	}
	cfg.Scopes, cfg.ClientURI, cfg.ClientName = "openid email", config.DefaultMASClientURI, "mxprobe-test"
	mgr := auth.NewManager(httpc)
	auth.RegisterMAS(mgr, cfg)
	acct := auth.Account{Key: "acme/bot", Tenant: "acme", Role: "bot", HomeserverURL: hs, ServerName: "example.org",
		Password: botPassword, Config: config.Account{Method: method, User: "openmeet-bot-acme", Email: "bot-acme@openmeet.net"}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rec := probes.NewRecorder("login", "login", "acme")
	if _, err := mgr.Login(ctx, acct, rec); err == nil {
		t.Fatalf("login succeeded against a hostile server: %+v", rec.Finish())
	}
	res := rec.Finish()
	assertNoSecrets(t, res, masCookieSecret, platformCookieSecret)
	return res
}

func wantFail(t *testing.T, r probes.Result, step string, class probes.Class, msg string) {
	t.Helper()
	if r.FailedStep != step || r.Class != class || !strings.Contains(r.Error, msg) {
		t.Fatalf("failed at %s (%s): %s\nwant %s (%s) with %q; steps %v", r.FailedStep, r.Class, r.Error, step, class, msg, stepNames(r))
	}
}

// redirectTo answers 302 to u.
func redirectTo(u func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, u(), http.StatusFound) }
}

// platformAPI is an OpenMeet-like platform: the email login sets the
// session cookie (host-only, on 127.0.0.1 like every server here).
func platformAPI(t *testing.T) *logServer {
	return newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/auth/email/login" {
			http.NotFound(w, r)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: "oidc_session", Value: platformCookieSecret, Path: "/", HttpOnly: true})
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"token":"t"}`)
	})
}

// A provider page on an origin the configuration does not name, with a
// password form: MAS (same host, another port) sends the bot there. Neither
// adapter submits anything; MAS's and the platform's cookies stay home.
func TestMASHostileProviderOnAnotherOrigin(t *testing.T) {
	for _, adapter := range []string{config.UpstreamForm, config.UpstreamOpenMeet} {
		t.Run(adapter, func(t *testing.T) {
			evil := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) { servePage(w, stealPage) })
			mas := fakeMAS(t, false, redirectTo(func() string { return evil.URL + "/login?client_id=mas" }))
			platform := platformAPI(t)
			cfg := config.MAS{PublicURL: mas.URL,
				Upstream: config.Upstream{Adapter: adapter, APIURL: platform.URL, UsernameField: "email", PasswordField: "password"}}
			res := hostileLogin(t, hostileClient(t, nil), cfg, mas.URL, config.MethodMASOIDC)
			wantFail(t, res, auth.StepProviderAuthorize, probes.ClassConfig, "the password is not submitted")
			evil.assertGotNoSecret(t, "the other origin", false)
			if got := evil.requests(); len(got) != 1 || got[0].Path != "/login" {
				t.Errorf("the other origin got %+v, want one GET /login", got)
			}
			mas.assertNoForeign(t, "MAS", platformCookieSecret, botPassword)
			platform.assertNoForeign(t, "the platform", masCookieSecret)
			if got := platform.requests(); adapter == config.UpstreamOpenMeet && (len(got) == 0 || got[0].Path != "/api/v1/auth/email/login") {
				t.Errorf("the platform login did not happen: %+v", got)
			}
		})
	}
}

// The configured provider itself misleads: a 302 to a page on another host
// whose password form posts to its own /steal; its form posting to another
// origin; its form sending the password in a URL.
func TestMASHostileConfiguredProvider(t *testing.T) {
	cases := []struct {
		name     string
		provider func(evil *logServer) http.HandlerFunc
		class    probes.Class
		msg      string
	}{
		{name: "302 to another host", provider: func(evil *logServer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				http.SetCookie(w, &http.Cookie{Name: "provider", Value: platformCookieSecret, Path: "/"})
				http.Redirect(w, r, "http://localhost:"+evil.port()+"/login", http.StatusFound)
			}
		}, class: probes.ClassConfig, msg: "configured provider origin is http://127.0.0.1:"},
		{name: "form posts to another origin", provider: func(evil *logServer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				servePage(w, strings.Replace(stealPage, `action="/steal"`, `action="http://localhost:`+evil.port()+`/steal"`, 1))
			}
		}, class: probes.ClassBadResponse, msg: "posts to another origin (http://localhost:"},
		{name: "form with method GET", provider: func(evil *logServer) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/steal" {
					http.Error(w, "no", http.StatusForbidden)
					return
				}
				servePage(w, strings.Replace(stealPage, `method="post"`, `method="get"`, 1))
			}
		}, class: probes.ClassBadResponse, msg: "would put the password in a URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evil := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) { servePage(w, stealPage) })
			var provider *logServer
			provider = newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) { tc.provider(evil)(w, r) })
			mas := fakeMAS(t, false, redirectTo(func() string { return provider.URL + "/api/oidc/auth?client_id=mas" }))
			cfg := config.MAS{PublicURL: mas.URL, Upstream: config.Upstream{Adapter: config.UpstreamForm,
				Origin: provider.URL, UsernameField: "email", PasswordField: "password"}}
			res := hostileLogin(t, hostileClient(t, nil), cfg, mas.URL, config.MethodMASOIDC)
			wantFail(t, res, auth.StepProviderAuthorize, tc.class, tc.msg)
			evil.assertGotNoSecret(t, "the other host", false)
			provider.assertNoForeign(t, "the provider", masCookieSecret, botPassword)
			for _, r := range evil.requests() {
				if r.Method != http.MethodGet || r.Path != "/login" {
					t.Errorf("the other host got %s %s", r.Method, r.Path)
				}
			}
		})
	}
}

// An https MAS redirecting to a plain http page on another host: refused
// before anything is sent there.
func TestMASHostileHTTPSDowngrade(t *testing.T) {
	evil := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) { servePage(w, stealPage) })
	var mas *logServer
	mas = fakeMAS(t, true, redirectTo(func() string { return "http://evil.test:" + evil.port() + "/login" }))
	masURL := "https://example.com:" + mas.port() // the TLS test certificate's name
	httpc := hostileClient(t, map[string]bool{"example.com": true, "evil.test": true}, mas)
	cfg := config.MAS{PublicURL: masURL, Upstream: config.Upstream{Adapter: config.UpstreamForm,
		Origin: "http://evil.test:" + evil.port(), UsernameField: "email", PasswordField: "password"}}
	res := hostileLogin(t, httpc, cfg, masURL, config.MethodMASOIDC)
	wantFail(t, res, auth.StepAuthorize, probes.ClassBadResponse, "https → http downgrade")
	if got := evil.requests(); len(got) != 0 {
		t.Errorf("the plain http host got %+v", got)
	}
	if len(mas.requests()) < 3 {
		t.Errorf("MAS (over https, names mapped to loopback) was not reached: %+v", mas.requests())
	}
}

// The homeserver's compat SSO redirect leads to another origin than MAS's:
// class config, nothing sent there. Without mas.public_url, MAS's origin
// comes from the homeserver's auth_metadata.
func TestMASHostileCompatSSOHandOver(t *testing.T) {
	for _, publicURL := range []bool{true, false} {
		name := "public_url"
		if !publicURL {
			name = "discovered"
		}
		t.Run(name, func(t *testing.T) {
			evil := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) { servePage(w, stealPage) })
			mas := fakeMAS(t, false, redirectTo(func() string { return "http://localhost:9005/" }))
			hs := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/_matrix/client/v1/auth_metadata":
					http.Redirect(w, r, mas.URL+r.URL.Path, http.StatusTemporaryRedirect) // not followed either
				case "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata":
					w.Header().Set("Content-Type", "application/json")
					_, _ = io.WriteString(w, `{"issuer":"`+mas.URL+`/","authorization_endpoint":"`+mas.URL+`/authorize",`+
						`"token_endpoint":"`+mas.URL+`/oauth2/token","registration_endpoint":"`+mas.URL+`/oauth2/registration"}`)
				case "/_matrix/client/v3/login/sso/redirect":
					http.SetCookie(w, &http.Cookie{Name: "hs", Value: masCookieSecret, Path: "/"})
					http.Redirect(w, r, evil.URL+"/complete-compat-sso/01X", http.StatusSeeOther)
				default:
					http.NotFound(w, r)
				}
			})
			cfg := config.MAS{Upstream: config.Upstream{Adapter: config.UpstreamForm, Origin: evil.URL}}
			if publicURL {
				cfg.PublicURL = mas.URL
			}
			res := hostileLogin(t, hostileClient(t, nil), cfg, hs.URL, config.MethodMASCompatSSO)
			wantFail(t, res, auth.StepSSORedirect, probes.ClassConfig, "not to MAS ("+mas.URL)
			if got := evil.requests(); len(got) != 0 {
				t.Errorf("the other origin got %+v", got)
			}
			if got := mas.requests(); len(got) != 0 {
				t.Errorf("MAS got %+v (the homeserver's 307 on auth_metadata was followed?)", got)
			}
			if d, ok := res.StepDuration(auth.StepDiscovery); ok == publicURL {
				t.Errorf("discovery step present %v (%v), want %v", ok, d, !publicURL)
			}
		})
	}
}

// MAS's JSON endpoints follow no redirect: discovery, registration and the
// token endpoint answering 3xx fail as bad_response naming the location,
// and the other host never sees the request (nor the code and verifier).
func TestMASHostileJSONEndpointRedirects(t *testing.T) {
	evil := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	t.Run("discovery", func(t *testing.T) {
		hs := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, evil.URL+"/.well-known/openid-configuration?x=1", http.StatusFound)
		})
		cfg := config.MAS{Upstream: config.Upstream{Adapter: config.UpstreamForm, Origin: evil.URL}}
		res := hostileLogin(t, hostileClient(t, nil), cfg, hs.URL, config.MethodMASOIDC)
		wantFail(t, res, auth.StepDiscovery, probes.ClassBadResponse,
			"auth_metadata HTTP 302 redirect to "+evil.URL+"/.well-known/openid-configuration not followed")
	})
	t.Run("registration", func(t *testing.T) {
		var mas *logServer
		mas = newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/oauth2/registration" {
				http.Redirect(w, r, evil.URL+"/register", http.StatusTemporaryRedirect)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"issuer":"`+mas.URL+`/","authorization_endpoint":"`+mas.URL+`/authorize",`+
				`"token_endpoint":"`+mas.URL+`/oauth2/token","registration_endpoint":"`+mas.URL+`/oauth2/registration"}`)
		})
		cfg := config.MAS{Upstream: config.Upstream{Adapter: config.UpstreamForm, Origin: evil.URL}}
		res := hostileLogin(t, hostileClient(t, nil), cfg, mas.URL, config.MethodMASOIDC)
		wantFail(t, res, auth.StepRegistration, probes.ClassBadResponse,
			"/oauth2/registration: HTTP 307 redirect to "+evil.URL+"/register not followed")
	})
	t.Run("token", func(t *testing.T) {
		var mas *logServer
		mas = fakeMAS(t, false, func(w http.ResponseWriter, r *http.Request) {
			// Straight back to the redirect URI with a code and the state.
			q := url.Values{"code": {"hostile-code-1"}, "state": {r.URL.Query().Get("state")}}
			http.Redirect(w, r, r.URL.Query().Get("redirect_uri")+"?"+q.Encode(), http.StatusFound)
		})
		tokenMAS := newLogServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/oauth2/token" {
				http.Redirect(w, r, evil.URL+"/token", http.StatusTemporaryRedirect)
				return
			}
			mas.srv.Config.Handler.ServeHTTP(w, r)
		})
		cfg := config.MAS{PublicURL: tokenMAS.URL, Upstream: config.Upstream{Adapter: config.UpstreamForm, Origin: evil.URL}}
		res := hostileLogin(t, hostileClient(t, nil), cfg, tokenMAS.URL, config.MethodMASOIDC)
		wantFail(t, res, auth.StepTokenExchange, probes.ClassBadResponse,
			"/oauth2/token: HTTP 307 redirect to "+evil.URL+"/token not followed")
	})
	if got := evil.requests(); len(got) != 0 {
		t.Errorf("the other host got %+v", got)
	}
}

// The openmeet adapter sends the password to api_url only over https or
// to loopback: a plain http platform on another host gets nothing.
func TestMASOpenMeetPlainHTTPRefused(t *testing.T) {
	platform := platformAPI(t)
	mas := fakeMAS(t, false, redirectTo(func() string { return "http://localhost:9005/" }))
	cfg := config.MAS{PublicURL: mas.URL, Upstream: config.Upstream{Adapter: config.UpstreamOpenMeet,
		APIURL: "http://api.test:" + platform.port()}}
	res := hostileLogin(t, hostileClient(t, map[string]bool{"api.test": true}), cfg, mas.URL, config.MethodMASOIDC)
	wantFail(t, res, auth.StepUpstreamLogin, probes.ClassConfig, "plain http on a non-loopback host")
	if got := platform.requests(); len(got) != 0 {
		t.Errorf("the plain http platform got %+v", got)
	}
}
