package probes

import (
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxText is the most bytes of remote-influenced text (an error message, a
// step detail) a Result keeps: a hostile server's 500 KB Location header or
// error body ends as this much text plus " …", so the history (60 runs per
// probe and tenant) stays small.
const MaxText = 1024

// CutText cuts s to at most n bytes on a rune boundary, marking the cut.
func CutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " …"
}

// BoundText cuts the free text of the Result (error, step errors and
// details) to MaxText each, with control characters escaped (a server's
// ESC or BEL never reaches a terminal, log or page), and bounds its signals
// (MaxSignalName, MaxSignals). The engine applies it to every Result.
func (r *Result) BoundText() {
	r.Error = boundText(r.Error)
	for i := range r.Steps {
		r.Steps[i].Error = boundText(r.Steps[i].Error)
		r.Steps[i].Detail = boundText(r.Steps[i].Detail)
	}
	r.boundSignals()
}

func boundText(s string) string {
	return CutText(EscapeControls(CutText(s, MaxText), true), MaxText)
}

// Recorder builds a Result while a probe runs: it times steps back to back,
// so the steps of a run add up to (nearly) the run's own duration, and the
// first failing step decides the run's class.
type Recorder struct {
	res   Result
	start time.Time
	now   func() time.Time
	last  int // index of the last step, -1 if none
	// secrets are scrubbed from every error text recorded (see Scrub).
	secrets []string
	// scrubbers match the secrets' encoded forms (secretPattern); built
	// on the first text scrubbed, since most runs record none.
	scrubbers []*regexp.Regexp
}

// NewRecorder starts a run record.
func NewRecorder(probe, typ, tenant string) *Recorder {
	now := time.Now()
	return &Recorder{
		res:   Result{Probe: probe, Type: typ, Tenant: tenant, Started: now, Outcome: OutcomeSuccess, Steps: []Step{}},
		start: now,
		now:   time.Now,
		last:  -1,
	}
}

// Step runs fn as a timed step named name. A returned error marks the step
// failed and, if no earlier step failed, the run as well; the error is
// returned unchanged so the probe can stop.
func (r *Recorder) Step(name string, fn func() error) error {
	t0 := r.now()
	err := fn()
	r.record(name, r.now().Sub(t0), err, true)
	return err
}

// SoftStep is Step for steps whose failure is counted but does not fail the
// run (cleanup after the main path succeeded).
func (r *Recorder) SoftStep(name string, fn func() error) error {
	t0 := r.now()
	err := fn()
	r.record(name, r.now().Sub(t0), err, false)
	return err
}

// AddStep records a step timed elsewhere (for example one hop of an HTTP
// redirect chain).
func (r *Recorder) AddStep(name string, d time.Duration, err error) {
	r.record(name, d, err, true)
}

func (r *Recorder) record(name string, d time.Duration, err error, failsRun bool) {
	st := Step{Name: name, Duration: d, OK: err == nil}
	if err != nil {
		st.Class = Classify(err)
		st.Error = r.scrub(err.Error())
		st.Status = StatusOf(err)
	}
	r.res.Steps = append(r.res.Steps, st)
	r.last = len(r.res.Steps) - 1
	if err != nil && failsRun {
		r.Fail(name, err)
	}
}

// Note attaches a short, secret-free detail to the last step.
func (r *Recorder) Note(detail string) {
	if r.last < 0 {
		return
	}
	detail = CutText(r.scrub(detail), MaxText)
	if old := r.res.Steps[r.last].Detail; old != "" {
		if len(old) >= MaxText {
			return // already full (and cut)
		}
		r.res.Steps[r.last].Detail = CutText(old+"; "+detail, MaxText)
		return
	}
	r.res.Steps[r.last].Detail = detail
}

// SetStatus sets the HTTP status of the last step.
func (r *Recorder) SetStatus(status int) {
	if r.last >= 0 {
		r.res.Steps[r.last].Status = status
	}
}

// Fail marks the run failed at step (unless it already failed). Warning
// classes (rate limiting) give a warning outcome instead of a failure.
func (r *Recorder) Fail(step string, err error) {
	if r.res.Outcome != OutcomeSuccess {
		return
	}
	class := Classify(err)
	r.res.Class = class
	r.res.FailedStep = step
	r.res.Error = r.scrub(err.Error())
	if class.Skip() {
		r.res.Outcome = OutcomeSkipped
	} else if class.Warning() {
		r.res.Outcome = OutcomeWarning
	} else {
		r.res.Outcome = OutcomeFailure
	}
}

// Warn marks a run that passed with a warning (a threshold near its limit).
func (r *Recorder) Warn(step string, class Class, msg string) {
	if r.res.Outcome != OutcomeSuccess {
		return
	}
	r.res.Outcome = OutcomeWarning
	r.res.Class = class
	r.res.FailedStep = step
	r.res.Error = r.scrub(msg)
}

// Scrub names secrets the run uses (passwords, tokens): they are replaced by
// "<redacted>" in every error text recorded from now on, exact copies and
// URL-, percent- or JSON-escaped or split ones alike (secretPattern), and a
// start of one where a text was cut (cutSecretPrefix), so a server
// that echoes credentials in its error messages cannot get them into a
// Result.
func (r *Recorder) Scrub(secrets ...string) {
	for _, s := range secrets {
		if len(s) >= 4 && !slices.Contains(r.secrets, s) {
			r.secrets = append(r.secrets, s)
		}
	}
}

func (r *Recorder) scrub(msg string) string {
	for len(r.scrubbers) < len(r.secrets) {
		r.scrubbers = append(r.scrubbers, nil)
	}
	for i, s := range r.secrets {
		msg = strings.ReplaceAll(msg, s, "<redacted>")
		// Every encoded or split form is at least as long as the secret:
		// a shorter text holds none, and a long secret's pattern (a
		// platform JWT's) is compiled only for a text that could.
		if len(msg) >= len(s) && mayHoldEncoded(msg, s) {
			if r.scrubbers[i] == nil {
				r.scrubbers[i] = secretPattern(s)
			}
			msg = r.scrubbers[i].ReplaceAllLiteralString(msg, "<redacted>")
		}
		msg = cutSecretPrefix(msg, s)
	}
	return CutText(msg, MaxText)
}

// Failed reports whether the run has failed or warned so far.
func (r *Recorder) Failed() bool { return r.res.Outcome != OutcomeSuccess }

// Count adds n to a named count of the run.
func (r *Recorder) Count(name string, n int) { r.res.AddCount(name, n) }

// Signal records a numeric signal of the run.
func (r *Recorder) Signal(name string, v float64) { r.res.SetSignal(name, v) }

// SetMethod records the login method used.
func (r *Recorder) SetMethod(m string) { r.res.Method = m }

// Finish closes the record and returns the Result.
func (r *Recorder) Finish() Result {
	r.res.Duration = r.now().Sub(r.start)
	r.res.BoundText()
	return r.res
}
