package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/probes"
)

// MAS discovery: the homeserver's auth_metadata (stable, unstable MSC2965),
// then MAS's own well-known document, cached with a TTL.

// AuthMetadata is the part of MAS's OAuth 2.0 server metadata the login uses.
type AuthMetadata struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	RegistrationEndpoint  string   `json:"registration_endpoint"`
	RevocationEndpoint    string   `json:"revocation_endpoint,omitempty"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported,omitempty"`
}

func (a *AuthMetadata) check() error {
	for name, v := range map[string]string{
		"issuer": a.Issuer, "authorization_endpoint": a.AuthorizationEndpoint,
		"token_endpoint": a.TokenEndpoint, "registration_endpoint": a.RegistrationEndpoint,
	} {
		u, err := url.Parse(v)
		if v == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("metadata %s is missing or not an http(s) URL", name)
		}
	}
	if len(a.CodeChallengeMethods) > 0 {
		for _, m := range a.CodeChallengeMethods {
			if m == "S256" {
				return nil
			}
		}
		return fmt.Errorf("the server does not support PKCE S256")
	}
	return nil
}

type discoveryEntry struct {
	meta    AuthMetadata
	source  string
	expires time.Time
}

// discover finds MAS's metadata: the homeserver's auth_metadata, its unstable
// MSC2965 path, then MAS's own well-known document; cached with a TTL.
func (m *MASMethod) discover(ctx context.Context, hc *http.Client, homeserver string) (AuthMetadata, string, error) {
	key := strings.TrimRight(homeserver, "/")
	ckey := key + "|" + strings.TrimRight(m.Config.PublicURL, "/")
	m.cache.mu.Lock()
	e, ok := m.cache.discovery[ckey]
	m.cache.mu.Unlock()
	if ok && m.now().Before(e.expires) {
		return e.meta, "cached (" + e.source + ")", nil
	}
	type cand struct{ url, source string }
	var cands []cand
	if key != "" {
		cands = append(cands,
			cand{key + "/_matrix/client/v1/auth_metadata", "auth_metadata"},
			cand{key + "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", "unstable auth_metadata"})
	}
	if pub := strings.TrimRight(m.Config.PublicURL, "/"); pub != "" {
		cands = append(cands, cand{pub + "/.well-known/openid-configuration", "MAS well-known"})
	}
	var firstErr error
	var tried []string
	for _, c := range cands {
		var meta AuthMetadata
		status, err := getJSON(ctx, hc, c.url, &meta)
		if err == nil {
			err = meta.check()
			if err != nil {
				err = probes.Errorf(ClassDiscovery, "%s: %v", c.source, err)
			}
		}
		if err == nil {
			m.cache.mu.Lock()
			m.cache.discovery[ckey] = discoveryEntry{meta: meta, source: c.source, expires: m.now().Add(m.ttl())}
			m.cache.mu.Unlock()
			detail := c.source
			if len(tried) > 0 {
				detail += " (fallback after " + strings.Join(tried, ", ") + ")"
			}
			return meta, detail, nil
		}
		if ctx.Err() != nil {
			return AuthMetadata{}, "", probes.WithClass(probes.Classify(ctx.Err()), ctx.Err())
		}
		var rr *redirectRefused
		if errors.As(err, &rr) {
			tried = append(tried, fmt.Sprintf("%s HTTP %d redirect to %s not followed", c.source, rr.status, rr.to))
		} else {
			tried = append(tried, fmt.Sprintf("%s %s", c.source, statusText(status, err)))
		}
		if firstErr == nil && status != http.StatusNotFound && status != http.StatusMethodNotAllowed && status != http.StatusBadRequest {
			firstErr = err
		}
	}
	if len(cands) == 0 {
		return AuthMetadata{}, "", probes.Errorf(probes.ClassConfig, "no homeserver URL and no mas.public_url to discover MAS from")
	}
	if firstErr != nil {
		class := probes.Classify(firstErr)
		var rr *redirectRefused
		if class == probes.ClassInternal || class == probes.ClassBadResponse || class == probes.ClassNotFound {
			class = ClassDiscovery
		}
		if errors.As(firstErr, &rr) {
			class = probes.ClassBadResponse // a redirect, not followed
		}
		return AuthMetadata{}, "", &probes.Error{Class: class, Status: probes.StatusOf(firstErr),
			Err: fmt.Errorf("no usable auth metadata: %s", strings.Join(tried, "; "))}
	}
	return AuthMetadata{}, "", probes.Errorf(ClassDiscovery,
		"no auth metadata: %s (the homeserver does not delegate to MAS; set mas.public_url)", strings.Join(tried, "; "))
}

func statusText(status int, err error) string {
	if status != 0 {
		return fmt.Sprintf("HTTP %d", status)
	}
	return string(probes.Classify(err))
}

// getJSON fetches a JSON document; the error is classified.
func getJSON(ctx context.Context, hc *http.Client, u string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, probes.Errorf(probes.ClassConfig, "bad URL")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := tokenClient(hc).Do(req)
	if err != nil {
		return 0, transportError(redactURL(req.URL), err)
	}
	defer drain(resp)
	if resp.StatusCode/100 == 3 {
		return resp.StatusCode, refusedRedirect(req, resp)
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, &probes.Error{Class: probes.ClassForStatus(resp.StatusCode), Status: resp.StatusCode,
			Err: fmt.Errorf("%s: HTTP %d", redactURL(req.URL), resp.StatusCode)}
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, masBodyLimit)).Decode(out); err != nil {
		return resp.StatusCode, &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode,
			Err: fmt.Errorf("%s: not JSON", redactURL(req.URL))}
	}
	return resp.StatusCode, nil
}
