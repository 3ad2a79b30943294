package mxclient_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

const (
	botPassword   = "bot-PASSWORD-never-leaves"
	botToken      = "syt_TOKEN_never_leaves"
	basicPassword = "metrics-BASIC-never-leaves"
)

// thief is the other host a hostile server redirects to: it records every
// request it gets, headers and body, and answers like a willing homeserver.
type thief struct {
	*httptest.Server
	mu  sync.Mutex
	log []string
}

func newThief(t *testing.T, tlsOn bool) *thief {
	th := &thief{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		th.mu.Lock()
		th.log = append(th.log, fmt.Sprintf("%s %s %v %s", r.Method, r.URL, r.Header, b))
		th.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"x","user_id":"@bot:example.org","device_id":"D","versions":["v1.11"]}`)
	})
	if tlsOn {
		th.Server = httptest.NewTLSServer(h)
	} else {
		th.Server = httptest.NewServer(h)
	}
	t.Cleanup(th.Close)
	return th
}

// assertClean fails if any request reached the thief, or carried a secret.
func (th *thief) assertClean(t *testing.T) {
	t.Helper()
	th.mu.Lock()
	defer th.mu.Unlock()
	for _, l := range th.log {
		for _, s := range []string{botPassword, botToken, basicPassword} {
			if strings.Contains(l, s) {
				t.Errorf("secret %q reached the other host: %s", s, l)
			}
		}
	}
	if len(th.log) != 0 {
		t.Errorf("%d request(s) followed the redirect to the other host: %q", len(th.log), th.log)
	}
}

// hostile answers the paths in routes with a redirect to to+path; everything
// else gets a well-behaved Matrix answer.
func hostile(t *testing.T, tlsOn bool, to string, code int, routes ...string) *httptest.Server {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		for _, p := range routes {
			if r.URL.Path == p {
				http.Redirect(w, r, to+r.URL.Path+"?steal=1", code)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/_matrix/client/v3/login":
			fmt.Fprintf(w, `{"access_token":%q,"user_id":"@bot:example.org","device_id":"D"}`, botToken)
		case "/_matrix/client/v3/account/whoami":
			fmt.Fprint(w, `{"user_id":"@bot:example.org","device_id":"D"}`)
		case "/_matrix/client/versions":
			fmt.Fprint(w, `{"versions":["v1.11"]}`)
		default:
			http.NotFound(w, r)
		}
	})
	var s *httptest.Server
	if tlsOn {
		s = httptest.NewTLSServer(h)
	} else {
		s = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

// probeClient is the daemon's probe HTTP client, trusting the test CA.
func probeClient() *http.Client {
	c := mxclient.NewHTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test servers only
	return c
}

func loginConfig(t *testing.T, hs string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: example.org
tenants:
  - id: acme
    bot:
      user: bot
      password: %q
probes:
  - name: login
    type: login
  - name: versions
    type: versions
`, hs, botPassword)), "test.yml", func(string) string { return "" }, auth.LoginType().Kind, matrix.VersionsType().Kind)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func wantRedirectFailure(t *testing.T, res probes.Result, step, other string) {
	t.Helper()
	if res.Outcome != probes.OutcomeFailure || res.Class != probes.ClassBadResponse || res.FailedStep != step {
		t.Fatalf("want bad_response at %s, got %s %s at %s: %s", step, res.Outcome, res.Class, res.FailedStep, res.Error)
	}
	if !strings.Contains(res.Error, "redirect") || !strings.Contains(res.Error, other) {
		t.Fatalf("error does not name the redirect and its location %s: %q", other, res.Error)
	}
	for _, s := range []string{botPassword, botToken, basicPassword} {
		if strings.Contains(fmt.Sprint(res), s) {
			t.Fatalf("secret in the result: %+v", res)
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// TestNoCredentialAcrossRedirects: a homeserver that redirects /login (307,
// which would re-POST the password), whoami (307 to another port, which
// would carry the bearer token), or versions (302 to another port), an
// https → http downgrade, and a Synapse metrics page with basic auth that
// redirects: no request reaches the other host, and each run fails as
// bad_response naming the location.
func TestNoCredentialAcrossRedirects(t *testing.T) {
	t.Run("login 307", func(t *testing.T) {
		th := newThief(t, false)
		hs := hostile(t, false, th.URL, http.StatusTemporaryRedirect, "/_matrix/client/v3/login")
		cfg := loginConfig(t, hs.URL)
		p := &auth.LoginProbe{Name: "login", Manager: auth.NewManager(probeClient()), Tenants: cfg.TenantMap(nil)}
		wantRedirectFailure(t, p.Run(ctx(t), "acme"), "login", th.URL)
		th.assertClean(t)
	})
	t.Run("whoami 307", func(t *testing.T) {
		th := newThief(t, false)
		hs := hostile(t, false, th.URL, http.StatusTemporaryRedirect, "/_matrix/client/v3/account/whoami")
		cfg := loginConfig(t, hs.URL)
		p := &auth.LoginProbe{Name: "login", Manager: auth.NewManager(probeClient()), Tenants: cfg.TenantMap(nil)}
		wantRedirectFailure(t, p.Run(ctx(t), "acme"), "whoami", th.URL)
		th.assertClean(t)
	})
	t.Run("versions 302", func(t *testing.T) {
		th := newThief(t, false)
		hs := hostile(t, false, th.URL, http.StatusFound, "/_matrix/client/versions")
		p := &matrix.VersionsProbe{Name: "versions", HTTP: probeClient(), Homeservers: matrix.Homeservers(loginConfig(t, hs.URL))}
		wantRedirectFailure(t, p.Run(ctx(t), ""), "versions", th.URL)
		th.assertClean(t)
	})
	t.Run("https to http", func(t *testing.T) {
		th := newThief(t, false)
		hs := hostile(t, true, th.URL, http.StatusTemporaryRedirect,
			"/_matrix/client/v3/login", "/_matrix/client/versions")
		cfg := loginConfig(t, hs.URL)
		lp := &auth.LoginProbe{Name: "login", Manager: auth.NewManager(probeClient()), Tenants: cfg.TenantMap(nil)}
		wantRedirectFailure(t, lp.Run(ctx(t), "acme"), "login", th.URL)
		vp := &matrix.VersionsProbe{Name: "versions", HTTP: probeClient(), Homeservers: matrix.Homeservers(cfg)}
		wantRedirectFailure(t, vp.Run(ctx(t), ""), "versions", th.URL)
		th.assertClean(t)
	})
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("synapse basic auth tls=%v", tlsOn), func(t *testing.T) {
			th := newThief(t, false)
			hs := hostile(t, tlsOn, th.URL, http.StatusFound, "/_synapse/metrics")
			sc := &synapse.Settings{URL: hs.URL + "/_synapse/metrics",
				BasicAuth: &synapse.BasicAuth{Username: "prom", Password: basicPassword}}
			sc.ApplyDefaults()
			p := &synapse.Probe{Name: "synapse", Config: sc, HTTP: probeClient()}
			res := p.Run(ctx(t), "")
			if res.Outcome != probes.OutcomeFailure || res.Class != probes.ClassBadResponse ||
				!strings.Contains(res.Error, "redirect") || !strings.Contains(res.Error, th.URL) {
				t.Fatalf("want bad_response naming the redirect, got %s %s: %s", res.Outcome, res.Class, res.Error)
			}
			if strings.Contains(fmt.Sprint(res), basicPassword) {
				t.Fatal("basic auth password in the result")
			}
			th.assertClean(t)
		})
	}
}

// TestRefuseRedirectsCutsLocation: a huge Location header ends up short in
// the error.
func TestRefuseRedirectsCutsLocation(t *testing.T) {
	long := "http://127.0.0.1:1/" + strings.Repeat("é", 100_000)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", long)
		w.WriteHeader(http.StatusFound)
	}))
	defer s.Close()
	p := &matrix.VersionsProbe{Name: "versions", HTTP: probeClient(), Homeservers: matrix.Homeservers(loginConfig(t, s.URL))}
	res := p.Run(ctx(t), "")
	if res.Class != probes.ClassBadResponse || len(res.Error) > probes.MaxText+len(" …") || !utf8.ValidString(res.Error) {
		t.Fatalf("class %s, error of %d bytes", res.Class, len(res.Error))
	}
}
