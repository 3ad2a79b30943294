package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// StepUpstreamLogout ends the platform session the openmeet adapter's
// email login created, once the flow no longer needs it.
const StepUpstreamLogout = "upstream_logout"

// CountUpstreamLogoutPrefix prefixes the Result.Counts keys that count
// platform logouts: "upstream_logout:success" / ":failure".
const CountUpstreamLogoutPrefix = "upstream_logout:"

// upstreamLogoutTimeout bounds the platform logout (best effort).
const upstreamLogoutTimeout = 5 * time.Second

// upstreamSessionEnder is an UpstreamAdapter whose login leaves a session
// at the provider's platform, ended after the authorization flow.
type upstreamSessionEnder interface {
	EndSession(ctx context.Context, hc *http.Client, acct Account, rec *probes.Recorder)
}

// endUpstreamSession ends the adapter's platform session of hc, if any
// (deferred right after BeforeAuthorize).
func endUpstreamSession(ctx context.Context, a UpstreamAdapter, hc *http.Client, acct Account, rec *probes.Recorder) {
	if se, ok := a.(upstreamSessionEnder); ok {
		se.EndSession(ctx, hc, acct, rec)
	}
}

// platformTokens keeps the bearer token of each flow's platform login
// (keyed by the flow's HTTP client) until the flow ends it.
type platformTokens struct {
	mu     sync.Mutex
	tokens map[*http.Client]platformLogin
}

type platformLogin struct{ token, tenant string }

func (p *platformTokens) put(hc *http.Client, l platformLogin) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tokens == nil {
		p.tokens = map[*http.Client]platformLogin{}
	}
	p.tokens[hc] = l
}

func (p *platformTokens) take(hc *http.Client) (platformLogin, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.tokens[hc]
	delete(p.tokens, hc)
	return l, ok
}

// readPlatformToken reads the bearer token of the email login's answer
// ({refreshToken, token, tokenExpires, user, sessionId}; openmeet-api
// src/auth/auth.controller.ts, AuthController.login).
func readPlatformToken(resp *http.Response) string {
	var out struct {
		Token string `json:"token"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, masBodyLimit)).Decode(&out)
	return out.Token
}

// EndSession implements upstreamSessionEnder: POST /api/v1/auth/logout with
// the login answer's bearer token and x-tenant-id ends the platform session
// (openmeet-api src/auth/auth.controller.ts, AuthController.logout), so
// repeated logins leave no sessions behind at the platform. It is a soft
// step: a failed logout never fails the login. The flow's cookies are dropped
// with its client.
func (o *OpenMeetAdapter) EndSession(ctx context.Context, hc *http.Client, acct Account, rec *probes.Recorder) {
	l, ok := o.logins.take(hc)
	if !ok || l.token == "" {
		return
	}
	rec.Scrub(l.token)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), upstreamLogoutTimeout)
	defer cancel()
	err := rec.SoftStep(StepUpstreamLogout, func() error {
		u := strings.TrimRight(o.APIURL, "/") + "/api/v1/auth/logout"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
		if err != nil {
			return probes.Errorf(probes.ClassConfig, "mas.upstream.api_url is not a URL")
		}
		req.Header.Set("Authorization", "Bearer "+l.token)
		req.Header.Set("x-tenant-id", l.tenant)
		resp, err := hc.Do(req)
		if err != nil {
			return transportError("platform logout", err)
		}
		drain(resp)
		switch st := resp.StatusCode; {
		case st/100 == 2:
			return nil
		case st >= 500:
			return &probes.Error{Class: probes.ClassHTTP5xx, Status: st, Err: fmt.Errorf("platform logout: HTTP %d", st)}
		default:
			return &probes.Error{Class: ClassUpstreamLogin, Status: st, Err: fmt.Errorf("platform logout refused (HTTP %d)", st)}
		}
	})
	if err != nil {
		rec.Count(CountUpstreamLogoutPrefix+"failure", 1)
		return
	}
	rec.Count(CountUpstreamLogoutPrefix+"success", 1)
}
