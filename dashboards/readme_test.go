package dashboards

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// readmeMetricRe finds the metric names of a README table row's first cell.
var readmeMetricRe = regexp.MustCompile("`(mxprobe_[a-z0-9_]+\\*?)`")

// readmeMetrics returns the metrics the README's tables document: every
// name in backquotes in the first cell of a table row. A name ending in *
// stands for a family of names (mxprobe_synapse_*).
func readmeMetrics(readme string) []string {
	var out []string
	for _, line := range strings.Split(readme, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		for _, m := range readmeMetricRe.FindAllStringSubmatch(cells[1], -1) {
			out = append(out, m[1])
		}
	}
	return out
}

func TestReadmeMetrics(t *testing.T) {
	got := readmeMetrics("text `mxprobe_not_a_row`\n| `mxprobe_a` / `mxprobe_b_total` | gauge | x `mxprobe_c` |\n| `mxprobe_synapse_*` (histogram) | |\n|---|---|\n")
	want := []string{"mxprobe_a", "mxprobe_b_total", "mxprobe_synapse_*"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%v, want %v", got, want)
	}
}

// TestReadmeMetricTablesMatchMetrics is issue 25's "Done when" 4: the
// README's metric tables name exactly the mxprobe families a running daemon
// serves on /metrics (liveFamilies: a daemon probing the local Dendrite with
// every probe type and its own alerting, plus the families the exporter
// only creates on events a local run does not produce). A family served but
// not documented fails, and so does a documented one nobody serves. The Go
// and process collectors' families are documented as such, not by name.
func TestReadmeMetricTablesMatchMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := readmeMetrics(string(b))
	if len(documented) < 20 {
		t.Fatalf("only %d metrics in the README's tables", len(documented))
	}
	served := map[string]bool{}
	for name := range liveFamilies(t) {
		if strings.HasPrefix(name, "mxprobe_") {
			served[name] = true
		}
	}
	covered := map[string]bool{}
	for _, d := range documented {
		prefix, wildcard := strings.CutSuffix(d, "*")
		n := 0
		for s := range served {
			if s == d || (wildcard && strings.HasPrefix(s, prefix)) {
				covered[s] = true
				n++
			}
		}
		if n == 0 {
			t.Errorf("the README documents %s, which the daemon does not serve", d)
		}
	}
	var undocumented []string
	for s := range served {
		if !covered[s] {
			undocumented = append(undocumented, s)
		}
	}
	sort.Strings(undocumented)
	for _, s := range undocumented {
		t.Errorf("the daemon serves %s, which no README metric table documents", s)
	}
	t.Logf("%d names in the README cover %d served families", len(documented), len(served))
}
