// Package probes holds what every probe shares: the Result a run produces,
// the timed steps inside it, the failure classes, the engine that runs probes
// under a concurrency limit, and the scheduler that triggers them.
//
// A probe returns a Result and knows nothing about metrics, alerts or HTTP;
// sinks (exporters, alerts, history) consume Results and know nothing about
// Matrix.
package probes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// Class is the failure class of a run or a step. The empty class means success.
type Class string

// Failure classes shared by every probe. Probes may add their own (the MAS
// login adds discovery, registration, consent, ...), keeping them short,
// lower-case and bounded so they can be used as metric label values.
const (
	ClassNone             Class = ""
	ClassUnreachable      Class = "unreachable"
	ClassTimeout          Class = "timeout"
	ClassHTTP5xx          Class = "http_5xx"
	ClassAuthFailed       Class = "auth_failed"
	ClassRateLimited      Class = "rate_limited"
	ClassBadResponse      Class = "bad_response"
	ClassIdentityMismatch Class = "identity_mismatch"
	ClassForbidden        Class = "forbidden"
	ClassNotFound         Class = "not_found"
	ClassThreshold        Class = "threshold"
	ClassConfig           Class = "config"
	ClassCancelled        Class = "cancelled"
	ClassInternal         Class = "internal"
	// ClassLoginBudget: the run needed a full login while the login budget
	// (a sliding window kept under the homeserver's login rate limit) was
	// spent; the run is skipped, not failed.
	ClassLoginBudget Class = "login_budget"
)

// SharedClasses are the classes any probe that talks HTTP may report
// (returned afresh: a probe type appends its own to declare its classes).
func SharedClasses() []Class {
	return []Class{ClassUnreachable, ClassTimeout, ClassHTTP5xx, ClassAuthFailed, ClassRateLimited,
		ClassBadResponse, ClassIdentityMismatch, ClassForbidden, ClassNotFound, ClassThreshold,
		ClassConfig, ClassCancelled, ClassInternal, ClassLoginBudget}
}

// Warning reports whether a failure of this class is a warning rather than an
// outage: the homeserver asked us to slow down, which is not the deployment
// being broken.
func (c Class) Warning() bool { return c == ClassRateLimited }

// Skip reports whether a run stopped by this class is skipped (it did not
// measure anything) rather than failed.
func (c Class) Skip() bool { return c == ClassLoginBudget }

// Outcome is the verdict of a run.
type Outcome string

const (
	OutcomeSuccess Outcome = "success"
	OutcomeWarning Outcome = "warning"
	OutcomeFailure Outcome = "failure"
	OutcomeSkipped Outcome = "skipped"
)

// Step is one timed part of a run.
type Step struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"-"`
	OK       bool          `json:"ok"`
	Class    Class         `json:"class,omitempty"`
	Error    string        `json:"error,omitempty"`
	// Status is the HTTP status of the step's last request, where there was one.
	Status int `json:"status,omitempty"`
	// Detail is a short, secret-free note ("joined first", "fallback discovery").
	Detail string `json:"detail,omitempty"`
}

// Result is what one probe run produces.
type Result struct {
	Probe      string        `json:"probe"`
	Type       string        `json:"type"`
	Tenant     string        `json:"tenant"`
	Outcome    Outcome       `json:"outcome"`
	Class      Class         `json:"class,omitempty"`
	FailedStep string        `json:"failed_step,omitempty"`
	Error      string        `json:"error,omitempty"`
	Started    time.Time     `json:"started"`
	Duration   time.Duration `json:"-"`
	Steps      []Step        `json:"steps"`
	// Signals are numeric observations of the run (message delivery seconds,
	// Synapse health signals...). Alert rules and exporters read them by name.
	// A signal about one part of the target is named "<signal>:<part>", for
	// example "http_5xx_ratio:RoomSendEventRestServlet"; a plain name is the
	// whole ("http_5xx_ratio").
	Signals map[string]float64 `json:"signals,omitempty"`
	// Counts are event counters of the run (rate limits met, token refreshes...).
	Counts map[string]int `json:"counts,omitempty"`
	// Method is the login method used, where the probe logged in.
	Method string `json:"method,omitempty"`
}

// Count names used in Result.Counts.
const (
	CountRateLimited    = "rate_limited"
	CountTokenRefresh   = "token_refresh"
	CountLogin          = "login"
	CountCleanupFailure = "cleanup_failure"
	// CountLoginPrefix prefixes the counts of logins by method and result:
	// "login:<method>:success" / "login:<method>:failure".
	CountLoginPrefix = "login:"
	// CountRevocationPrefix prefixes the counts of revocations of replaced
	// sessions: "mas_revocation:success" / ":failure".
	CountRevocationPrefix = "mas_revocation:"
)

// Signal names shared between probes and sinks.
const (
	SignalDeliverySeconds = "message_delivery_seconds"
	// SignalNextLoginSeconds: a run skipped by the login budget says how
	// long until the budget's next slot (for the status page).
	SignalNextLoginSeconds = "login_budget_next_seconds"
)

// MeasuredNothing reports whether the run measured nothing of what its
// probe watches: it was skipped, or the homeserver refused it with 429
// before its first measured step (at a login, or a session's proof, which
// only prepare the run). Such a run says nothing about the deployment:
// exporters leave success, latencies and the last success as they were.
func (r *Result) MeasuredNothing() bool {
	if r.Outcome == OutcomeSkipped {
		return true
	}
	if r.Class != ClassRateLimited {
		return false
	}
	for _, s := range r.Steps {
		if !s.OK {
			return s.Class == ClassRateLimited
		}
		if !PreparationStep(s.Name) {
			return false
		}
	}
	return false
}

// PreparationStep reports whether a step only prepares a run (logging an
// account in, proving a kept session, waiting for the login budget),
// named with or without a role prefix ("peer_login").
func PreparationStep(name string) bool {
	for _, p := range []string{"login", "session_resume", "login_budget_wait"} {
		if name == p || strings.HasSuffix(name, "_"+p) {
			return true
		}
	}
	return false
}

// OK reports whether the run is not a failure (success or warning).
func (r *Result) OK() bool { return r.Outcome == OutcomeSuccess || r.Outcome == OutcomeWarning }

// StepDuration returns the duration of the named step and whether it ran.
func (r *Result) StepDuration(name string) (time.Duration, bool) {
	for _, s := range r.Steps {
		if s.Name == name {
			return s.Duration, true
		}
	}
	return 0, false
}

// AddCount adds n to the named count.
func (r *Result) AddCount(name string, n int) {
	if r.Counts == nil {
		r.Counts = map[string]int{}
	}
	r.Counts[name] += n
}

// SetSignal records a numeric signal.
func (r *Result) SetSignal(name string, v float64) {
	if r.Signals == nil {
		r.Signals = map[string]float64{}
	}
	r.Signals[name] = v
}

// Error is an error with a failure class and, optionally, the HTTP status
// that produced it. Probes return it from steps so the recorder can classify.
type Error struct {
	Class  Class
	Status int
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return string(e.Class)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds a classified error.
func Errorf(class Class, format string, args ...any) error {
	return &Error{Class: class, Err: fmt.Errorf(format, args...)}
}

// WithClass wraps err with a class (keeps err's own class if it has one and
// class is empty).
func WithClass(class Class, err error) error {
	if err == nil {
		return nil
	}
	if class == ClassNone {
		var pe *Error
		if errors.As(err, &pe) && pe.Class != ClassNone {
			return err
		}
	}
	return &Error{Class: class, Err: err}
}

// Classify finds the failure class of err: an explicit *Error wins; otherwise
// context deadlines are timeouts, and network errors that never reached the
// server are unreachable.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	var pe *Error
	if errors.As(err, &pe) && pe.Class != ClassNone {
		return pe.Class
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ClassTimeout
	}
	if errors.Is(err, context.Canceled) {
		return ClassCancelled
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ClassTimeout
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) {
		return ClassUnreachable
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return ClassUnreachable
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return ClassUnreachable
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// A transport failure after the connection was made (reset, EOF mid-body).
		return ClassBadResponse
	}
	return ClassInternal
}

// StatusOf returns the HTTP status carried by err, or 0.
func StatusOf(err error) int {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Status
	}
	return 0
}

// ClassForStatus maps an HTTP status to a failure class.
func ClassForStatus(status int) Class {
	switch {
	case status >= 500:
		return ClassHTTP5xx
	case status == 429:
		return ClassRateLimited
	case status == 401:
		return ClassAuthFailed
	case status == 403:
		return ClassForbidden
	case status == 404:
		return ClassNotFound
	case status >= 400:
		return ClassBadResponse
	}
	return ClassNone
}

// MarshalJSON writes durations as seconds.
func (s Step) MarshalJSON() ([]byte, error) {
	type plain Step
	return json.Marshal(struct {
		plain
		Duration float64 `json:"duration_seconds"`
	}{plain(s), s.Duration.Seconds()})
}

// UnmarshalJSON reads durations written as seconds.
func (s *Step) UnmarshalJSON(b []byte) error {
	type plain Step
	var v struct {
		plain
		Duration float64 `json:"duration_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Step(v.plain)
	s.Duration = time.Duration(v.Duration * float64(time.Second))
	return nil
}

// MarshalJSON writes durations as seconds.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		Duration float64 `json:"duration_seconds"`
	}{plain(r), r.Duration.Seconds()})
}

// UnmarshalJSON reads durations written as seconds.
func (r *Result) UnmarshalJSON(b []byte) error {
	type plain Result
	var v struct {
		plain
		Duration float64 `json:"duration_seconds"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Result(v.plain)
	r.Duration = time.Duration(v.Duration * float64(time.Second))
	return nil
}
