package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// stream builds `go test -json` lines.
type stream []string

func (s *stream) ev(action, pkg, test, output string) {
	b, _ := json.Marshal(event{Action: action, Package: pkg, Test: test, Output: output})
	*s = append(*s, string(b))
}

func run(t *testing.T, s stream) (string, bool) {
	t.Helper()
	var out strings.Builder
	r := newReport(&out)
	for _, l := range s {
		r.line([]byte(l))
	}
	ok := r.finish()
	return out.String(), ok
}

func TestFailureShowsItsOwnMessages(t *testing.T) {
	var s stream
	s.ev("run", "p", "TestA", "")
	s.ev("output", "p", "TestA", "=== RUN   TestA\n")
	s.ev("output", "p", "TestA", "    a_test.go:3: late run 4 failed at send (timeout)\n")
	s.ev("output", "p", "TestA", "--- FAIL: TestA (20.09s)\n")
	s.ev("fail", "p", "TestA", "")
	s.ev("output", "p", "", "FAIL\n")
	s.ev("fail", "p", "", "")
	out, ok := run(t, s)
	if ok {
		t.Fatal("a failed test passed the report")
	}
	if !strings.Contains(out, "late run 4 failed at send (timeout)") {
		t.Errorf("the test's message is missing:\n%s", out)
	}
	if !strings.Contains(out, "0 passed, 1 failed, 0 skipped") {
		t.Errorf("closing line:\n%s", out)
	}
}

// test2json attributes an indented line by its indentation to a pending
// report; a message can land on the test before it. The failed test then
// shows only its RUN and FAIL lines, and the report shows the package's
// output before the failure.
func TestFailureWithMisattributedMessages(t *testing.T) {
	var s stream
	s.ev("output", "p", "TestPrev", "=== RUN   TestPrev\n")
	s.ev("output", "p", "TestPrev", "--- PASS: TestPrev (0.01s)\n")
	s.ev("pass", "p", "TestPrev", "")
	s.ev("output", "p", "TestB", "=== RUN   TestB\n")
	s.ev("output", "p", "TestPrev", "    b_test.go:9: early: only 3 runs in 20 s\n")
	s.ev("output", "p", "TestB", "--- FAIL: TestB (20.09s)\n")
	s.ev("fail", "p", "TestB", "")
	s.ev("fail", "p", "", "")
	out, _ := run(t, s)
	if !strings.Contains(out, "only 3 runs in 20 s") {
		t.Errorf("the misattributed message is missing:\n%s", out)
	}
	if !strings.Contains(out, "no message attributed to TestB") {
		t.Errorf("the report does not say where the message came from:\n%s", out)
	}
}

func TestFailureOutputAfterTheFailEvent(t *testing.T) {
	var s stream
	s.ev("output", "p", "TestC", "=== RUN   TestC\n")
	s.ev("output", "p", "TestC", "--- FAIL: TestC (1.00s)\n")
	s.ev("fail", "p", "TestC", "")
	s.ev("output", "p", "TestC", "    c_test.go:5: cleanup: 2 rooms left\n")
	s.ev("fail", "p", "", "")
	out, _ := run(t, s)
	if !strings.Contains(out, "cleanup: 2 rooms left") {
		t.Errorf("output after the fail event is missing:\n%s", out)
	}
	if strings.Contains(out, "no message attributed") {
		t.Errorf("the test had a message of its own:\n%s", out)
	}
}

func TestPassingRunAndSkips(t *testing.T) {
	var s stream
	s.ev("output", "p", "TestD", "=== RUN   TestD\n")
	s.ev("output", "p", "TestD", "    d_test.go:2: integration: Dendrite v0.13.8\n")
	s.ev("pass", "p", "TestD", "")
	s.ev("output", "p", "TestE", "    e_test.go:2: SKIPPED: needs chromium\n")
	s.ev("skip", "p", "TestE", "")
	s.ev("pass", "p", "", "")
	out, ok := run(t, s)
	if !ok {
		t.Fatalf("a passing run failed:\n%s", out)
	}
	for _, want := range []string{"1 passed, 0 failed, 1 skipped", "SKIPPED: needs chromium", "Dendrite v0.13.8", "1 test(s) ran"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q:\n%s", want, out)
		}
	}
}

func TestStreamCutShortFails(t *testing.T) {
	var s stream
	s.ev("output", "p", "TestF", "=== RUN   TestF\n")
	// no end of package: the test binary died or the pipe was cut
	if out, ok := run(t, s); ok {
		t.Errorf("a cut stream passed:\n%s", out)
	}
}

func TestBuildErrorsShown(t *testing.T) {
	s := stream{
		`{"ImportPath":"p [p.test]","Action":"build-output","Output":"p/x.go:3:1: undefined: y\n"}`,
		`{"ImportPath":"p [p.test]","Action":"build-fail"}`,
	}
	s.ev("output", "p", "", "FAIL\tp [build failed]\n")
	s.ev("fail", "p", "", "")
	out, ok := run(t, s)
	if ok || !strings.Contains(out, "undefined: y") {
		t.Errorf("build error not reported (ok=%v):\n%s", ok, out)
	}
}

// With -count > 1 a name runs several times: a failed repetition shows its
// own lines, not those of the repetitions that passed before it.
func TestRepeatedTestShowsOnlyTheFailedRepetition(t *testing.T) {
	var s stream
	for i, msg := range []string{"first ok", "second broke"} {
		s.ev("run", "p", "TestR", "")
		s.ev("output", "p", "TestR", "=== RUN   TestR\n")
		s.ev("output", "p", "TestR", "    r_test.go:1: "+msg+"\n")
		if i == 0 {
			s.ev("pass", "p", "TestR", "")
		} else {
			s.ev("fail", "p", "TestR", "")
		}
	}
	s.ev("fail", "p", "", "")
	out, _ := run(t, s)
	if !strings.Contains(out, "second broke") || strings.Contains(out, "first ok") {
		t.Errorf("want only the failed repetition's lines:\n%s", out)
	}
	if !strings.Contains(out, "1 passed, 1 failed") {
		t.Errorf("counts:\n%s", out)
	}
}

// A real `go test -json -count=4` stream whose third repetition failed: the
// report shows that repetition's messages.
func TestRealRepeatedFailureStream(t *testing.T) {
	b, err := os.ReadFile("testdata/repeated_fail.json")
	if err != nil {
		t.Fatal(err)
	}
	out, ok := run(t, strings.Split(strings.TrimSpace(string(b)), "\n"))
	if ok {
		t.Fatal("the failed stream passed")
	}
	if !strings.Contains(out, "early408091 run 0 failed") || strings.Contains(out, "early6337b4") {
		t.Errorf("want the failed repetition's messages only:\n%s", out)
	}
	if !strings.Contains(out, "3 passed, 1 failed, 0 skipped") {
		t.Errorf("counts:\n%s", out)
	}
}
