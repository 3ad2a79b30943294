package auth_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// fuzzMAS answers discovery, registration and the platform login properly,
// and every hop of the MAS chain with the fuzzed answer.
type fuzzMAS struct {
	status   int
	location string
	ctype    string
	body     string
}

func (f *fuzzMAS) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	body := ""
	switch {
	case strings.HasSuffix(req.URL.Path, "/auth_metadata"):
		resp.Header.Set("Content-Type", "application/json")
		body = `{"issuer":"https://mas.test/","authorization_endpoint":"https://mas.test/authorize","token_endpoint":"https://mas.test/oauth2/token","registration_endpoint":"https://mas.test/oauth2/registration"}`
	case strings.HasSuffix(req.URL.Path, "/oauth2/registration"):
		resp.StatusCode = 201
		body = `{"client_id":"01FUZZ"}`
	case strings.HasSuffix(req.URL.Path, "/api/v1/auth/email/login"):
		resp.Header.Set("Set-Cookie", "oidc_session=x; Path=/")
		body = `{}`
	case strings.HasSuffix(req.URL.Path, "/oauth2/token"):
		resp.Header.Set("Content-Type", "application/json")
		resp.StatusCode = f.status
		body = f.body
	default:
		resp.StatusCode = f.status
		if f.location != "" {
			resp.Header.Set("Location", f.location)
		}
		resp.Header.Set("Content-Type", f.ctype)
		body = f.body
	}
	resp.Body = io.NopCloser(strings.NewReader(body))
	return resp, nil
}

// FuzzMASHops feeds arbitrary answers to the hop follower: whatever MAS or
// the provider answer, the login ends in a classified failure (or a
// success), never a panic or an unclassified error.
func FuzzMASHops(f *testing.F) {
	f.Add(303, "/login?x=1", "text/html", "")
	f.Add(200, "", "text/html", `<form method="post"><input type="hidden" name="csrf" value="c"></form>`)
	f.Add(302, "http://localhost:9005/cb?code=a&state=b", "", "")
	f.Add(302, "http://localhost:9005/cb?error=access_denied&error_description=no", "", "")
	f.Add(400, "", "text/html", "<title>Invalid client</title>")
	f.Add(307, "::bad url", "", "")
	f.Add(200, "", "text/html; charset=utf-8", `<form action="javascript:x"><input type=password name=password></form>`)
	f.Fuzz(func(t *testing.T, status int, location, ctype, body string) {
		if status < 100 || status > 999 {
			status = 200
		}
		cfg := config.MAS{RedirectURI: "http://localhost:9005/cb", Scopes: "openid", ClientURI: config.DefaultMASClientURI,
			Upstream: config.Upstream{Adapter: config.UpstreamOpenMeet, APIURL: "https://api.test"}}
		mgr := auth.NewManager(&http.Client{Transport: &fuzzMAS{status: status, location: location, ctype: ctype, body: body}})
		auth.RegisterMAS(mgr, cfg)
		acct := auth.Account{Key: "t/bot", Tenant: "t", HomeserverURL: "https://hs.test", Password: "fuzz-s3cret",
			Config: config.Account{Method: config.MethodMASOIDC, User: "bot", Email: "bot@test"}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rec := probes.NewRecorder("login", "login", "t")
		_, err := mgr.Login(ctx, acct, rec)
		res := rec.Finish()
		if err != nil && (res.OK() || res.Class == "" || res.Class == probes.ClassInternal) {
			t.Fatalf("unclassified failure: err %v, result %s/%s %q", err, res.FailedStep, res.Class, res.Error)
		}
		if strings.Contains(res.Error, "fuzz-s3cret") && !strings.Contains(body+location, "fuzz-s3cret") {
			t.Fatalf("password in error: %q", res.Error)
		}
	})
}
