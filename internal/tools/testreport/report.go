package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

// IntegrationMarker starts the log line tests write when they use a real service.
const IntegrationMarker = "integration: "

// contextLines is how much of a package's output is shown for a failed test
// that has no message of its own in the stream.
const contextLines = 60

// failure is a failed test; its text is composed when its package ends, so
// output that test2json attributes to it after the fail event is kept too.
type failure struct {
	pkg, test string
	// own is the test's output: its lines up to the fail event, and those
	// attributed to it afterwards until it runs again (-count) or the
	// package ends.
	own []string
	// at is the length of the package's output when the test failed.
	at int
}

// pkgState is what the report keeps of one package while it runs.
type pkgState struct {
	// all is every output line of the package in order, whichever test
	// test2json attributed it to (tests that passed included).
	all []string
	// byTest holds each test's own lines ("" for the package itself).
	byTest   map[string][]string
	failures []*failure
	// open maps a failed test to its failure while later output may still
	// belong to it.
	open  map[string]*failure
	ended bool
}

type report struct {
	w                       io.Writer
	pkgs                    map[string]*pkgState
	order                   []string
	passed, failed, skipped int
	failures, skips         []string
	integration             map[string]map[string]bool // service -> tests
	pkgFailed, broken       bool
}

func newReport(w io.Writer) *report {
	return &report{w: w, pkgs: map[string]*pkgState{}, integration: map[string]map[string]bool{}}
}

func (r *report) pkg(name string) *pkgState {
	p, ok := r.pkgs[name]
	if !ok {
		p = &pkgState{byTest: map[string][]string{}, open: map[string]*failure{}}
		r.pkgs[name] = p
		r.order = append(r.order, name)
	}
	return p
}

// line takes one line of `go test -json`.
func (r *report) line(line []byte) {
	var ev event
	if err := json.Unmarshal(line, &ev); err != nil || ev.Action == "" {
		fmt.Fprintln(r.w, string(line)) // build errors and the like
		return
	}
	switch ev.Action {
	case "build-output":
		fmt.Fprint(r.w, ev.Output) // compiler errors, shown as they come
		return
	case "build-fail", "start":
		return
	}
	p := r.pkg(ev.Package)
	switch ev.Action {
	case "run":
		// A new run of the test (-count > 1 repeats names): its lines start
		// afresh.
		delete(p.byTest, ev.Test)
		delete(p.open, ev.Test)
	case "output":
		p.all = append(p.all, ev.Output)
		if f := p.open[ev.Test]; f != nil && ev.Test != "" {
			f.own = append(f.own, ev.Output)
			break
		}
		p.byTest[ev.Test] = append(p.byTest[ev.Test], ev.Output)
		if ev.Test != "" {
			if i := strings.Index(ev.Output, IntegrationMarker); i >= 0 {
				svc := strings.TrimSpace(ev.Output[i+len(IntegrationMarker):])
				if r.integration[svc] == nil {
					r.integration[svc] = map[string]bool{}
				}
				r.integration[svc][ev.Package+"."+topTest(ev.Test)] = true
			}
		}
	case "pass":
		if ev.Test == "" {
			fmt.Fprintf(r.w, "ok    %s (%.1fs)\n", ev.Package, ev.Elapsed)
			r.end(ev.Package)
		} else if !strings.Contains(ev.Test, "/") {
			r.passed++
		}
		delete(p.byTest, ev.Test)
	case "skip":
		if ev.Test == "" {
			fmt.Fprintf(r.w, "?     %s [no test files]\n", ev.Package)
			r.end(ev.Package)
			break
		}
		r.skipped++
		r.skips = append(r.skips, fmt.Sprintf("SKIP  %s.%s: %s", ev.Package, ev.Test, lastMeaningful(p.byTest[ev.Test])))
	case "fail":
		if ev.Test == "" {
			fmt.Fprintf(r.w, "FAIL  %s (%.1fs)\n", ev.Package, ev.Elapsed)
			r.pkgFailed = true
			out := p.byTest[""]
			r.end(ev.Package)
			if len(out) > 0 {
				r.failures = append(r.failures, fmt.Sprintf("--- package %s output:\n%s", ev.Package, strings.Join(out, "")))
			}
			break
		}
		if !strings.Contains(ev.Test, "/") {
			r.failed++
		}
		f := &failure{pkg: ev.Package, test: ev.Test, own: p.byTest[ev.Test], at: len(p.all)}
		delete(p.byTest, ev.Test)
		p.failures = append(p.failures, f)
		p.open[ev.Test] = f
	}
}

// end composes the failures of a package that finished.
func (r *report) end(name string) {
	p := r.pkg(name)
	if p.ended {
		return
	}
	p.ended = true
	for _, f := range p.failures {
		r.failures = append(r.failures, p.describe(f))
	}
	// Nothing more is needed of the package but its failures' texts.
	p.all, p.byTest, p.open = nil, nil, nil
}

// describe is a failed test's report: its own output and, when test2json
// gave it no message (only its RUN and FAIL lines), the package's output
// just before the failure, where its messages were attributed elsewhere.
func (p *pkgState) describe(f *failure) string {
	own := f.own
	var b strings.Builder
	fmt.Fprintf(&b, "--- FAIL %s.%s\n%s", f.pkg, f.test, strings.Join(own, ""))
	if hasMessage(own) {
		return b.String()
	}
	from := max(f.at-contextLines, 0)
	fmt.Fprintf(&b, "    (no message attributed to %s; the package's last %d output lines before it failed:)\n", f.test, f.at-from)
	for _, l := range p.all[from:f.at] {
		b.WriteString("    | " + l)
		if !strings.HasSuffix(l, "\n") {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// finish prints the report and says whether everything passed.
func (r *report) finish() bool {
	for _, name := range r.order {
		if !r.pkgs[name].ended {
			// The stream stopped early (a crash or a cut pipe): keep what
			// failed so far.
			r.end(name)
			r.pkgFailed = true
		}
	}
	if len(r.failures) > 0 {
		fmt.Fprintln(r.w, "\nFailures:")
		for _, f := range r.failures {
			fmt.Fprint(r.w, f)
			if !strings.HasSuffix(f, "\n") {
				fmt.Fprintln(r.w)
			}
		}
	}
	if len(r.skips) > 0 {
		fmt.Fprintln(r.w, "\nSkipped:")
		for _, s := range r.skips {
			fmt.Fprintln(r.w, s)
		}
	}
	if len(r.integration) > 0 {
		fmt.Fprintln(r.w, "\nIntegration tests against real services:")
		svcs := make([]string, 0, len(r.integration))
		for s := range r.integration {
			svcs = append(svcs, s)
		}
		sort.Strings(svcs)
		for _, s := range svcs {
			fmt.Fprintf(r.w, "  %-40s %d test(s) ran\n", s, len(r.integration[s]))
		}
	}
	fmt.Fprintf(r.w, "\n%d passed, %d failed, %d skipped\n", r.passed, r.failed, r.skipped)
	return r.failed == 0 && !r.pkgFailed && !r.broken
}

// hasMessage reports whether a test's lines hold anything but framing
// (=== RUN/PAUSE/CONT/NAME, --- PASS/FAIL) and blank lines.
func hasMessage(lines []string) bool {
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		return true
	}
	return false
}

func topTest(name string) string {
	if i := strings.Index(name, "/"); i >= 0 {
		return name[:i]
	}
	return name
}

func lastMeaningful(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "---") || strings.HasPrefix(l, "===") {
			continue
		}
		return l
	}
	return "(no reason given)"
}
