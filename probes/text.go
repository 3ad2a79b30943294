package probes

import (
	"fmt"
	"sort"
	"strings"
)

// MaxSignalName is the longest signal name a Result keeps; MaxSignals is
// the most signals it keeps. Names carry remote text (a Synapse cache or
// servlet name, capped far below this by the scraper); these bounds hold
// whatever a probe lets through, so the history, /api, /probe and /metrics
// stay small.
const (
	MaxSignalName = 256
	MaxSignals    = 4096
)

// isControl: C0 and C1 control characters and DEL (ESC, BEL, CR and the
// like, which a terminal acts on), and the bidirectional overrides and
// isolates, which reorder what a reader sees.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) ||
		(r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// EscapeControls writes every control character of s (see isControl) as a
// visible escape (\x1b, \u202e), except newline and tab when keepLines is
// set; invalid UTF-8 becomes U+FFFD. Text without any is returned as is.
func EscapeControls(s string, keepLines bool) string {
	clean := true
	for _, r := range s {
		if r == 0xfffd || (isControl(r) && !(keepLines && (r == '\n' || r == '\t'))) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for _, r := range s {
		switch {
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r < 0x80 && isControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case isControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r) // U+FFFD for invalid bytes
		}
	}
	return b.String()
}

// boundSignals drops signals whose name is too long or has control
// characters, and keeps at most MaxSignals (the first by name).
func (r *Result) boundSignals() {
	for k := range r.Signals {
		if len(k) > MaxSignalName || EscapeControls(k, false) != k {
			delete(r.Signals, k)
		}
	}
	if len(r.Signals) <= MaxSignals {
		return
	}
	names := make([]string, 0, len(r.Signals))
	for k := range r.Signals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names[MaxSignals:] {
		delete(r.Signals, k)
	}
}
