// Package httpcheck is the generic `http` probe: one request to a URL an
// operator names (OpenMeet's /health/readiness and /api/health/matrix, a
// status page, anything), timed and classified, its status and optionally
// its body checked (JSON fields, a regular expression).
package httpcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Steps of a run.
const (
	StepRequest = "request" // send, status line and body read
	StepStatus  = "status"  // the status is one of the expected
	StepBody    = "body"    // JSON fields and body regex
)

// SignalStatus is the HTTP status of the last answer.
const SignalStatus = "http_status_code"

// maxRedirects bounds follow_redirects.
const maxRedirects = 10

// Probe is a configured http probe.
type Probe struct {
	Name   string
	Config *Settings
	// HTTP is the shared client (its transport is used; redirects follow
	// the probe's own policy).
	HTTP *http.Client
}

// Run implements probes.Prober. subject is "" (the probe has one target).
func (p *Probe) Run(ctx context.Context, subject string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeHTTP, subject)
	c := p.Config
	var (
		status int
		body   []byte
		over   bool
	)
	if rec.Step(StepRequest, func() error {
		var err error
		status, body, over, err = p.do(ctx, rec)
		return err
	}) != nil {
		return rec.Finish()
	}
	rec.SetStatus(status)
	rec.Note(fmt.Sprintf("HTTP %d, %d bytes read", status, len(body)))
	rec.Signal(SignalStatus, float64(status))
	if rec.Step(StepStatus, func() error {
		if c.StatusOK(status) {
			return nil
		}
		class := probes.ClassForStatus(status)
		if class == probes.ClassNone {
			class = probes.ClassBadResponse // a redirect not followed, a 2xx not expected
		}
		return &probes.Error{Class: class, Status: status, Err: fmt.Errorf("HTTP %d, expected %s", status, expected(c))}
	}) != nil {
		return rec.Finish()
	}
	if len(c.JSON) == 0 && c.bodyRE == nil {
		return rec.Finish()
	}
	_ = rec.Step(StepBody, func() error {
		if over {
			return probes.Errorf(probes.ClassBadResponse, "body longer than %d bytes (http.max_body_bytes)", c.MaxBodyBytes)
		}
		if len(c.JSON) > 0 {
			var doc any
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber()
			if err := dec.Decode(&doc); err != nil {
				return probes.Errorf(probes.ClassBadResponse, "body is not JSON (%d bytes)", len(body))
			}
			for _, jc := range c.JSON {
				got, ok := lookup(doc, jc.Path)
				if !ok {
					return probes.Errorf(probes.ClassBadResponse, "JSON field %s is missing, expected %q", jc.Path, jc.Equals)
				}
				if got != jc.Equals {
					return probes.Errorf(probes.ClassBadResponse, "JSON field %s is %q, expected %q", jc.Path, mxclient.Short(got), jc.Equals)
				}
			}
		}
		if c.bodyRE != nil && !c.bodyRE.Match(body) {
			return probes.Errorf(probes.ClassBadResponse, "body (%d bytes) does not match %s", len(body), c.BodyRegex)
		}
		return nil
	})
	return rec.Finish()
}

// do sends the request and reads at most max_body_bytes of the answer
// (over reports a longer body).
func (p *Probe) do(ctx context.Context, rec *probes.Recorder) (status int, body []byte, over bool, err error) {
	c := p.Config
	var rd io.Reader
	if c.Body != "" {
		rd = strings.NewReader(c.Body)
	}
	req, err := http.NewRequestWithContext(ctx, c.Method, c.URL, rd)
	if err != nil {
		return 0, nil, false, probes.Errorf(probes.ClassConfig, "http.url: %v", err)
	}
	for k, v := range c.Headers {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = v // Go sends req.Host, not a Host header
			continue
		}
		req.Header.Set(k, v)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", mxclient.UserAgent)
	}
	if c.BearerToken != "" || c.BearerTokenFile != "" {
		tok, err := config.Secret(c.BearerToken, c.BearerTokenFile)
		if err != nil {
			return 0, nil, false, probes.Errorf(probes.ClassConfig, "http bearer token: %v", err)
		}
		rec.Scrub(tok)
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	base := p.HTTP
	if base == nil {
		base = http.DefaultClient
	}
	client := *base
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if !c.FollowRedirects {
			return http.ErrUseLastResponse
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		if !SameOrigin(via[0].URL, r.URL) {
			// Go forwards custom headers to any host and Authorization to
			// the same host name on another port or scheme
			// (net/http's shouldCopyHeaderOnRedirect); the configured
			// credentials are meant for the configured origin only.
			for k := range c.Headers {
				r.Header.Del(k)
			}
			for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
				r.Header.Del(k)
			}
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, false, transportError(err)
	}
	defer resp.Body.Close()
	limit := c.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return resp.StatusCode, nil, false, &probes.Error{Class: bodyClass(err), Status: resp.StatusCode,
			Err: fmt.Errorf("reading the body after %d bytes: %w", n, err)}
	}
	if n > limit {
		return resp.StatusCode, buf.Bytes()[:limit], true, nil
	}
	return resp.StatusCode, buf.Bytes(), false, nil
}

// SameOrigin reports whether a and b have the same scheme, host and port
// (a missing port is the scheme's default).
func SameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && originPort(a) == originPort(b)
}

func originPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// transportError classifies a failed request without echoing its URL
// (which may carry a query string an operator considers private).
func transportError(err error) error {
	class := probes.Classify(err)
	inner := err
	if u := errors.Unwrap(err); u != nil {
		inner = u
	}
	return &probes.Error{Class: class, Err: inner}
}

func bodyClass(err error) probes.Class {
	if c := probes.Classify(err); c == probes.ClassTimeout || c == probes.ClassCancelled {
		return c
	}
	return probes.ClassBadResponse
}

func expected(c *Settings) string {
	if len(c.ExpectedStatus) == 0 {
		return "2xx"
	}
	s := make([]string, len(c.ExpectedStatus))
	for i, v := range c.ExpectedStatus {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, " or ")
}

// lookup follows a dotted path through objects and arrays (numeric parts
// index arrays) and renders the value found as text: strings as they are,
// numbers as written, true/false, null, objects and arrays as JSON.
func lookup(doc any, path string) (string, bool) {
	cur := doc
	for _, part := range strings.Split(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[part]
			if !ok {
				return "", false
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(v) {
				return "", false
			}
			cur = v[i]
		default:
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	case nil:
		return "null", true
	}
	b, _ := json.Marshal(cur)
	return string(b), true
}
