package probes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestRemoteTextIsBounded: a hostile 500 KB text (error, note) ends in the
// Result cut to MaxText on a rune boundary.
func TestRemoteTextIsBounded(t *testing.T) {
	huge := strings.Repeat("€", 500_000/3)
	rec := NewRecorder("p", "t", "")
	_ = rec.Step("hop", func() error { return Errorf(ClassBadResponse, "Location: %s", huge) })
	rec.Note(huge)
	rec.Note(huge)
	res := rec.Finish()
	for _, s := range []string{res.Error, res.Steps[0].Error, res.Steps[0].Detail} {
		if len(s) > MaxText+len(" …") || !utf8.ValidString(s) || !strings.HasSuffix(s, " …") {
			t.Fatalf("text of %d bytes (valid UTF-8 %v)", len(s), utf8.ValidString(s))
		}
	}
	e := NewEngine(1)
	e.SetJobs([]*Job{{Name: "raw", Subjects: []string{""}, Timeout: 1e9, Prober: ProberFunc(func(_ context.Context, _ string) Result {
		return Result{Outcome: OutcomeFailure, Class: ClassBadResponse, Error: huge, Steps: []Step{{Name: "x", Detail: huge, Error: huge}}}
	})}})
	res, err := e.Run(context.Background(), "raw", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Error) > MaxText+4 || len(res.Steps[0].Detail) > MaxText+4 || len(res.Steps[0].Error) > MaxText+4 {
		t.Fatalf("engine kept long text: %d %d %d", len(res.Error), len(res.Steps[0].Detail), len(res.Steps[0].Error))
	}
	e.Shutdown(0)
	if CutText("abc", 10) != "abc" {
		t.Fatal("short text changed")
	}
	// Every cut, whatever the byte it falls on, keeps whole characters
	// (alerts and the status page cut with CutText too).
	mixed := strings.Repeat("é€😀a", 20) // 2-, 3-, 4- and 1-byte characters
	for n := 0; n < 60; n++ {
		if got := CutText(mixed, n); !utf8.ValidString(got) || len(got) > n+len(" …") {
			t.Fatalf("CutText(%d) = %q", n, got)
		}
	}
}

// WithClass keeps the class err already has when given no class, and sets
// the given one otherwise.
func TestWithClassKeepsOwnClass(t *testing.T) {
	inner := Errorf(ClassAuthFailed, "wrong password")
	if got := Classify(WithClass(ClassNone, fmt.Errorf("login: %w", inner))); got != ClassAuthFailed {
		t.Errorf("WithClass(\"\", classed) = %q, want %q", got, ClassAuthFailed)
	}
	if got := Classify(WithClass(ClassTimeout, inner)); got != ClassTimeout {
		t.Errorf("WithClass(timeout, classed) = %q, want timeout", got)
	}
	if WithClass(ClassTimeout, nil) != nil {
		t.Error("WithClass(class, nil) != nil")
	}
}

// TestResultTextEscapedAndSignalsBounded: every Result the engine hands on
// has control characters in its texts escaped (newlines and tabs kept),
// and no signal whose name is over MaxSignalName bytes or carries control
// characters, and at most MaxSignals signals.
func TestResultTextEscapedAndSignalsBounded(t *testing.T) {
	hostile := "a\x1b[2J\x1b]0;t\x07\rb\u202ec\u009bd\ne\tf\xff"
	sig := map[string]float64{"ok": 1, "cache_hit_ratio:" + strings.Repeat("n", 1_500_000): 0.5, "bad:\x1b[31m": 2}
	for i := range MaxSignals + 10 {
		sig[fmt.Sprintf("s%05d", i)] = 1
	}
	e := NewEngine(1)
	defer e.Shutdown(0)
	e.SetJobs([]*Job{{Name: "raw", Subjects: []string{""}, Timeout: 1e9, Prober: ProberFunc(func(_ context.Context, _ string) Result {
		return Result{Outcome: OutcomeFailure, Class: ClassBadResponse, Error: hostile, Steps: []Step{{Name: "x", Detail: hostile, Error: hostile}}, Signals: sig}
	})}})
	res, err := e.Run(context.Background(), "raw", "")
	if err != nil {
		t.Fatal(err)
	}
	want := `a\x1b[2J\x1b]0;t\x07\x0db\u202ec\u009bd` + "\ne\tf\ufffd"
	for _, s := range []string{res.Error, res.Steps[0].Detail, res.Steps[0].Error} {
		if s != want {
			t.Errorf("text %q, want %q", s, want)
		}
	}
	if len(res.Signals) != MaxSignals {
		t.Errorf("%d signals kept", len(res.Signals))
	}
	for k := range res.Signals {
		if len(k) > MaxSignalName || strings.ContainsAny(k, "\x1b\x07") {
			t.Fatalf("signal %.40q kept", k)
		}
	}
}
