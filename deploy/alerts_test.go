package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// runbookURL is where every alert's runbook_url points: a section of
// docs/runbook.md, by the anchor GitHub gives its heading.
const runbookURL = "https://github.com/mxprobe/mxprobe/blob/main/docs/runbook.md#"

// alertRule is an alerting rule of mxprobe.rules.yml.
type alertRule struct {
	name        string
	annotations map[string]string
}

func alertRules(t *testing.T) []alertRule {
	t.Helper()
	var out []alertRule
	for _, g := range list(yamlDocs(t, filepath.Join("prometheus", "mxprobe.rules.yml"))[0]["groups"]) {
		for _, r := range list(get(g, "rules")) {
			name, _ := get(r, "alert").(string)
			if name == "" {
				continue
			}
			ann := map[string]string{}
			if m, ok := get(r, "annotations").(map[string]any); ok {
				for k, v := range m {
					ann[k], _ = v.(string)
				}
			}
			out = append(out, alertRule{name, ann})
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d alerts in mxprobe.rules.yml", len(out))
	}
	return out
}

// runbookAnchors returns the anchors of docs/runbook.md's headings.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	anchors, err := testenv.MarkdownAnchors(filepath.Join("..", "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	return anchors
}

func TestGithubAnchor(t *testing.T) {
	for h, want := range map[string]string{
		" MxprobeDown":                      "mxprobedown",
		" Bot authentication (M_FORBIDDEN)": "bot-authentication-m_forbidden",
		" What to check first":              "what-to-check-first",
	} {
		if got := testenv.GitHubAnchor(h); got != want {
			t.Errorf("%q: %q, want %q", h, got, want)
		}
	}
}

// TestEveryAlertHasRunbook is half of "Done when" 1: every alert has a
// summary, a description and a runbook_url whose anchor is a heading of
// docs/runbook.md (and the runbook's own links resolve).
func TestEveryAlertHasRunbook(t *testing.T) {
	anchors := runbookAnchors(t)
	for _, a := range alertRules(t) {
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(a.annotations[k]) == "" {
				t.Errorf("alert %s has no %s", a.name, k)
			}
		}
		u := a.annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(u, runbookURL)
		if !ok {
			t.Errorf("alert %s: runbook_url %q is not %s<section>", a.name, u, runbookURL)
			continue
		}
		if !anchors[anchor] {
			t.Errorf("alert %s: docs/runbook.md has no section #%s", a.name, anchor)
		}
	}
	// The runbook's links between its sections lead somewhere too.
	b, err := os.ReadFile(filepath.Join("..", "docs", "runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(string(b), -1) {
		if !anchors[m[1]] {
			t.Errorf("docs/runbook.md links #%s, which is no section of it", m[1])
		}
	}
}

// firedLabels returns, per alert, the labels every firing expectation of
// mxprobe.rules.test.yml gives it (the labels the alert really carries);
// an alert without a firing expectation is absent.
func firedLabels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for _, tc := range list(yamlDocs(t, filepath.Join("prometheus", "mxprobe.rules.test.yml"))[0]["tests"]) {
		for _, at := range list(get(tc, "alert_rule_test")) {
			name, _ := get(at, "alertname").(string)
			for _, exp := range list(get(at, "exp_alerts")) {
				have := map[string]bool{"alertname": true}
				if m, ok := get(exp, "exp_labels").(map[string]any); ok {
					for k := range m {
						have[k] = true
					}
				}
				if prev, ok := out[name]; ok {
					for k := range prev {
						prev[k] = prev[k] && have[k]
					}
				} else {
					out[name] = have
				}
			}
		}
	}
	return out
}

// TestEveryAlertFiresInRuleTests is the other half of "Done when" 1: every
// alert of the rules has a promtool test case in which it fires (a case
// that only expects silence proves little).
func TestEveryAlertFiresInRuleTests(t *testing.T) {
	fired := firedLabels(t)
	for _, a := range alertRules(t) {
		if fired[a.name] == nil {
			t.Errorf("alert %s never fires in mxprobe.rules.test.yml", a.name)
		}
	}
}

var alertnameMatcher = regexp.MustCompile(`^alertname(=~|=)"([^"]*)"$`)

// matchedAlerts returns the alerts of names that matchers (Alertmanager
// matchers on alertname only) select.
func matchedAlerts(t *testing.T, matchers []any, names []string) []string {
	t.Helper()
	if len(matchers) != 1 {
		t.Fatalf("matchers %v: this test reads one alertname matcher per side", matchers)
	}
	s, _ := matchers[0].(string)
	m := alertnameMatcher.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("matcher %q: this test reads alertname=\"...\" or alertname=~\"...\" only", s)
	}
	pattern := regexp.QuoteMeta(m[2])
	if m[1] == "=~" {
		pattern = m[2]
	}
	re := regexp.MustCompile("^(?:" + pattern + ")$")
	var out []string
	for _, n := range names {
		if re.MatchString(n) {
			out = append(out, n)
		}
	}
	return out
}

// TestInhibitRulesMatchAlertLabels: every inhibit rule of the example
// Alertmanager configuration can take effect. Its source and target
// matchers select alerts that exist, and every label of `equal` is one that
// both the source and the target really carry (as the promtool tests see
// them fire). A label missing on both sides counts as equal in Alertmanager,
// so a missing one would inhibit across replicas; a label missing on one
// side never matches, and the rule never inhibits anything.
func TestInhibitRulesMatchAlertLabels(t *testing.T) {
	fired := firedLabels(t)
	var names []string
	for _, a := range alertRules(t) {
		names = append(names, a.name)
	}
	sort.Strings(names)
	am := yamlDocs(t, filepath.Join("alertmanager", "alertmanager.yml"))[0]
	rules := list(am["inhibit_rules"])
	if len(rules) == 0 {
		t.Fatal("no inhibit rules")
	}
	for i, r := range rules {
		sources := matchedAlerts(t, list(get(r, "source_matchers")), names)
		targets := matchedAlerts(t, list(get(r, "target_matchers")), names)
		if len(sources) == 0 || len(targets) == 0 {
			t.Errorf("inhibit rule %d: sources %v, targets %v: it selects no alert of the rules", i, sources, targets)
			continue
		}
		equal := list(get(r, "equal"))
		if len(equal) == 0 {
			t.Errorf("inhibit rule %d has no equal labels: it would inhibit across every replica and tenant", i)
		}
		for _, a := range append(sources, targets...) {
			for _, l := range equal {
				if !fired[a][l.(string)] {
					t.Errorf("inhibit rule %d: equal %v, but alert %s does not carry %s", i, equal, a, l)
				}
			}
		}
	}
}

// TestSlackLinksRunbook: both Slack receivers of the example Alertmanager
// configuration link each alert's runbook.
func TestSlackLinksRunbook(t *testing.T) {
	am := yamlDocs(t, filepath.Join("alertmanager", "alertmanager.yml"))[0]
	n := 0
	for _, r := range list(am["receivers"]) {
		for _, sc := range list(get(r, "slack_configs")) {
			n++
			text, _ := get(sc, "text").(string)
			link, _ := get(sc, "title_link").(string)
			if !strings.Contains(text, ".Annotations.runbook_url") || !strings.Contains(link, ".CommonAnnotations.runbook_url") {
				t.Errorf("receiver %v: the Slack message does not link the runbook (text %q, title_link %q)", get(r, "name"), text, link)
			}
		}
	}
	if n < 2 {
		t.Errorf("%d Slack configurations", n)
	}
}
