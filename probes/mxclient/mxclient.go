// Package mxclient builds mautrix clients for probes and turns what a
// homeserver answers into classified probe errors. It handles the good-citizen
// rules every probe shares: 429 M_LIMIT_EXCEEDED waits retry_after_ms when the
// wait fits in the run's deadline, and M_UNKNOWN_TOKEN is recognisable so the
// caller can log in again.
package mxclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix"

	"github.com/mxprobe/mxprobe/probes"
)

// UserAgent is the product token a request carries by default (the clients
// of New, and probes that set the header themselves). A client from
// NewHTTPClientAs replaces it with the full User-Agent it was given, so the
// daemon's version travels with every request without any package state.
const UserAgent = "mxprobe"

// ResponseSizeLimit bounds every Matrix response body.
const ResponseSizeLimit = 8 << 20

// New returns a mautrix client for the homeserver, using httpc (which must not
// have its own retries) and no automatic retries or rate-limit sleeps: probes
// decide that themselves within their deadline.
func New(homeserverURL string, httpc *http.Client) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(homeserverURL, "", "")
	if err != nil {
		return nil, probes.Errorf(probes.ClassConfig, "homeserver URL: %v", err)
	}
	if httpc != nil {
		cli.Client = httpc
	}
	cli.UserAgent = UserAgent
	cli.DefaultHTTPRetries = 0
	cli.IgnoreRateLimit = true
	cli.ResponseSizeLimit = ResponseSizeLimit
	return cli, nil
}

// NewHTTPClient returns an HTTP client suited for probing: no overall timeout
// (every request carries the run's context deadline), pooled connections,
// and no redirects followed: a 3xx ends the request as bad_response naming
// the location (see RefuseRedirects), so a password, access token or basic
// auth credential never travels to a host the configuration did not name.
// Its requests carry the User-Agent their caller set (UserAgent by default).
func NewHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 64
	tr.IdleConnTimeout = 90 * time.Second
	tr.ResponseHeaderTimeout = 0
	return &http.Client{Transport: tr, CheckRedirect: RefuseRedirects}
}

// NewHTTPClientAs is NewHTTPClient whose requests identify as userAgent
// (the daemon passes "mxprobe/<version>"): a request that carries the
// default UserAgent (every Matrix request of New's clients, the versions and
// http probes' own) carries userAgent instead. Others keep theirs: one the
// configuration chose (an http probe's headers), and Go's default on the
// requests that never set one (MAS and OpenMeet pages, metrics scrapes), as
// before the User-Agent was a value of the client.
func NewHTTPClientAs(userAgent string) *http.Client {
	c := NewHTTPClient()
	if userAgent != "" && userAgent != UserAgent {
		c.Transport = &userAgentTransport{base: c.Transport, userAgent: userAgent}
	}
	return c
}

// userAgentTransport puts the client's User-Agent on the requests that
// carry the default one.
type userAgentTransport struct {
	base      http.RoundTripper
	userAgent string
}

// RoundTrip implements http.RoundTripper; the caller's request is cloned,
// not modified, as RoundTrip's contract requires.
func (t *userAgentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") == UserAgent {
		req = req.Clone(req.Context())
		req.Header.Set("User-Agent", t.userAgent)
	}
	return t.base.RoundTrip(req)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// pooled connections.
func (t *userAgentTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// RedirectError is a redirect the probe client refused to follow.
type RedirectError struct {
	Status   int
	From     string // scheme://host/path of the request that was redirected
	Location string // where the server pointed, cut to a short length
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("HTTP %d redirect from %s to %s not followed (probe requests never follow redirects)", e.Status, e.From, e.Location)
}

// RefuseRedirects is an http.Client CheckRedirect that follows nothing: the
// request to the new location is never sent, and the client returns a
// *probes.Error of class bad_response wrapping a *RedirectError. Clients
// that must follow some redirects (a browser-like login flow) check each hop
// with their own rules instead.
func RefuseRedirects(req *http.Request, via []*http.Request) error {
	status := 0
	if req.Response != nil {
		status = req.Response.StatusCode
	}
	from := ""
	if len(via) > 0 {
		u := *via[len(via)-1].URL
		u.RawQuery, u.Fragment, u.User = "", "", nil
		from = u.String()
	}
	loc := req.URL.String()
	if req.Response != nil {
		if l := req.Response.Header.Get("Location"); l != "" {
			loc = l
		}
	}
	return &probes.Error{Class: probes.ClassBadResponse, Status: status,
		Err: &RedirectError{Status: status, From: Short(from), Location: Short(loc)}}
}

// ErrCode returns the Matrix errcode of err, or "".
func ErrCode(err error) string {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return he.RespError.ErrCode
	}
	var re mautrix.RespError
	if errors.As(err, &re) {
		return re.ErrCode
	}
	return ""
}

// HTTPStatus returns the HTTP status of err, or 0.
func HTTPStatus(err error) int {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		return he.Response.StatusCode
	}
	return probes.StatusOf(err)
}

// Is reports whether err carries the Matrix error of target
// (mautrix.MUnknownToken, mautrix.MLimitExceeded, ...): the errcode a
// RespError's Is compares, whether err wraps the RespError itself or an
// HTTPError that holds it next to a wrapped error.
func Is(err error, target mautrix.RespError) bool {
	if errors.Is(err, target) {
		return true
	}
	var he mautrix.HTTPError
	return errors.As(err, &he) && he.RespError != nil && he.RespError.Is(target)
}

// IsUnknownToken reports whether the homeserver rejected the access token.
func IsUnknownToken(err error) bool { return Is(err, mautrix.MUnknownToken) }

// SoftLogout reports whether an M_UNKNOWN_TOKEN came with soft_logout: true.
func SoftLogout(err error) bool {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		v, _ := he.RespError.ExtraData["soft_logout"].(bool)
		return v
	}
	return false
}

// RetryAfter returns the wait a 429 asked for (retry_after_ms, or the
// Retry-After header) and whether err is a rate limit at all.
func RetryAfter(err error) (time.Duration, bool) {
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		return 0, false
	}
	limited := (he.Response != nil && he.Response.StatusCode == http.StatusTooManyRequests) ||
		(he.RespError != nil && he.RespError.Is(mautrix.MLimitExceeded))
	if !limited {
		return 0, false
	}
	if he.RespError != nil {
		if ms, ok := he.RespError.ExtraData["retry_after_ms"].(float64); ok && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	if he.Response != nil {
		if ra := he.Response.Header.Get("Retry-After"); ra != "" {
			var secs int
			if _, err := fmt.Sscanf(ra, "%d", &secs); err == nil && secs >= 0 {
				return time.Duration(secs) * time.Second, true
			}
		}
	}
	return 0, true
}

// Classify turns a mautrix error into a classified probe error with a short,
// secret-free message.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var re *RedirectError
	if errors.As(err, &re) {
		return &probes.Error{Class: probes.ClassBadResponse, Status: re.Status, Err: re}
	}
	var pe *probes.Error
	if errors.As(err, &pe) {
		return err
	}
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		return &probes.Error{Class: probes.Classify(err), Err: err}
	}
	if he.Response == nil {
		// Never got an answer: the wrapped transport error says why.
		inner := he.WrappedError
		if inner == nil {
			inner = err
		}
		return &probes.Error{Class: probes.Classify(inner), Err: inner}
	}
	status := he.Response.StatusCode
	if he.RespError != nil && status/100 != 2 {
		class := probes.ClassForStatus(status)
		if he.RespError.Is(mautrix.MLimitExceeded) {
			class = probes.ClassRateLimited
		} else if he.RespError.Is(mautrix.MUnknownToken) || he.RespError.Is(mautrix.MMissingToken) {
			class = probes.ClassAuthFailed
		} else if class == probes.ClassNone {
			class = probes.ClassBadResponse
		}
		msg := he.RespError.Err
		if msg == "" {
			msg = http.StatusText(status)
		}
		return &probes.Error{Class: class, Status: status, Err: fmt.Errorf("%s (HTTP %d): %s", he.RespError.ErrCode, status, Short(msg))}
	}
	if status/100 != 2 {
		class := probes.ClassForStatus(status)
		if class == probes.ClassNone {
			class = probes.ClassBadResponse // a redirect (loop) or another unexpected status
		}
		if status/100 == 3 {
			return &probes.Error{Class: class, Status: status,
				Err: fmt.Errorf("HTTP %d redirect to %q not followed", status, Short(he.Response.Header.Get("Location")))}
		}
		return &probes.Error{Class: class, Status: status,
			Err: fmt.Errorf("HTTP %d without a Matrix error body", status)}
	}
	// A 2xx answer we could not read.
	inner := he.WrappedError
	if inner == nil {
		inner = errors.New(he.Message)
	}
	class := probes.Classify(inner)
	if class == probes.ClassInternal {
		class = probes.ClassBadResponse
	}
	return &probes.Error{Class: class, Status: status, Err: fmt.Errorf("HTTP %d: %s: %s", status, he.Message, Short(inner.Error()))}
}

// Short trims a message from a remote party to one line of at most 200 bytes.
func Short(s string) string {
	// Control characters other than the line breaks cut below are
	// escaped: a server's ESC sequences and BEL reach no terminal.
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i] + " …"
	}
	s = probes.EscapeControls(s, false)
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + " …"
	}
	return s
}

// RateLimitHook is told about every 429 the call met, and whether it waited.
type RateLimitHook func(wait time.Duration, waited bool)

// Call runs fn, and when the homeserver answers 429 waits retry_after_ms and
// tries again, as long as the wait ends before ctx's deadline (leaving
// margin for the retry itself). A limit that does not fit ends the call as
// rate_limited. Errors come back classified.
func Call(ctx context.Context, hook RateLimitHook, fn func(ctx context.Context) error) error {
	const margin = 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		wait, limited := RetryAfter(err)
		if !limited {
			return Classify(err)
		}
		if wait <= 0 {
			wait = time.Duration(200*(attempt+1)) * time.Millisecond
		}
		deadline, has := ctx.Deadline()
		if attempt >= 5 || (has && time.Until(deadline) < wait+margin) {
			if hook != nil {
				hook(wait, false)
			}
			msg := fmt.Sprintf("rate limited: homeserver asked to wait %s, beyond the run's deadline", wait.Round(time.Millisecond))
			if attempt >= 5 {
				msg = fmt.Sprintf("rate limited: still limited after %d retries", attempt)
			}
			return &probes.Error{Class: probes.ClassRateLimited, Status: http.StatusTooManyRequests, Err: errors.New(msg)}
		}
		if hook != nil {
			hook(wait, true)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return probes.WithClass(probes.Classify(ctx.Err()), ctx.Err())
		case <-t.C:
		}
	}
}
