package alerts

import (
	"maps"

	"github.com/mxprobe/mxprobe/config"
)

// RunbookBase is where the runbook_url of mxprobe's own rules points: the
// sections of docs/runbook.md, the same base the Prometheus rules of
// deploy/prometheus use, so an operator reads one runbook whichever path an
// alert took.
const RunbookBase = "https://github.com/mxprobe/mxprobe/blob/main/docs/runbook.md#"

// RunbookAnnotation is the annotation notifiers link as the runbook.
const RunbookAnnotation = "runbook_url"

// runbookFallback is the section on rules evaluated by mxprobe in general:
// the anchor of a probe type without a section of its own (a type added
// later, or a rule on a probe that is not configured).
const runbookFallback = "rules-evaluated-by-mxprobe"

// runbookAnchor is the section of docs/runbook.md for a rule of the given
// condition on a probe of the given type. A stale rule means the prober is
// stuck, whatever the probe; otherwise the probe type says what failed.
func runbookAnchor(probeType, condition string) string {
	if condition == "stale" {
		return "a-probe-produced-no-result"
	}
	switch probeType {
	case "login":
		return "login-failing-or-slow"
	case "roundtrip", "room_message":
		return "room-messages-failing-or-slow"
	case "versions", "http":
		return "an-endpoint-not-answering"
	case "synapse_metrics":
		return "synapse-signals"
	case "federation", "federation_roundtrip":
		return "federation-failing"
	case "tls":
		return "tls-certificates"
	case "media":
		return "media-repository-failing"
	}
	return runbookFallback
}

// withRunbook returns the rule's annotations with runbook_url set to the
// default section when the rule sets none. A rule's own runbook_url wins,
// and an empty one turns the link off (notification drops it). The
// configuration's map is copied, never written.
func withRunbook(c config.AlertRule, probeType string) map[string]string {
	if _, set := c.Annotations[RunbookAnnotation]; set {
		return c.Annotations
	}
	a := maps.Clone(c.Annotations)
	if a == nil {
		a = map[string]string{}
	}
	a[RunbookAnnotation] = RunbookBase + runbookAnchor(probeType, c.Condition())
	return a
}
