package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

// The rules of Grafana's dashboard linter (github.com/grafana/dashboard-linter,
// lint/rules.go) that the shipped dashboards follow in its strict mode,
// checked here without the linter binary: uneditable-dashboard-rule,
// template-datasource-rule, template-job-rule and template-instance-rule
// (template_utils.go checkTemplate), panel-title-description-rule,
// panel-units-rule, target-job-rule and target-instance-rule
// (rule_target_job_instance.go). One documented departure: the lower row of
// the Synapse dashboard selects Synapse's own series, scraped under
// Synapse's job names, by $synapse_job and $synapse_instance instead of
// $job and $instance (which select mxprobe's replicas); dashboards/.lint
// records it for the linter, which then passes both dashboards in strict
// mode (`dashboard-linter lint --strict <file>`).

// validUnits are the units panel-units-rule accepts (Grafana's
// valueFormats/categories.ts) that are of any use for mxprobe's series.
var validUnits = []string{
	"none", "short", "percent", "percentunit", "bytes", "decbytes", "bits", "decbits",
	"pps", "Bps", "bps", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations",
	"dateTimeAsIso", "dateTimeFromNow", "hertz", "cps", "ops", "reqps", "rps", "wps", "iops",
	"cpm", "opm", "rpm", "wpm", "bool", "bool_yes_no", "bool_on_off",
}

type lintDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// UnmarshalJSON accepts Grafana's older string form ("$datasource").
func (d *lintDatasource) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		d.UID = s
		return nil
	}
	type plain lintDatasource
	return json.Unmarshal(b, (*plain)(d))
}

type lintPanel struct {
	ID          int             `json:"id"`
	Title       string          `json:"title"`
	Type        string          `json:"type"`
	Description string          `json:"description"`
	Datasource  *lintDatasource `json:"datasource"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource *lintDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []lintPanel `json:"panels"`
}

type lintVariable struct {
	Name       string          `json:"name"`
	Label      string          `json:"label"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *lintDatasource `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

type lintDashboard struct {
	Title      string      `json:"title"`
	Editable   bool        `json:"editable"`
	Panels     []lintPanel `json:"panels"`
	Templating struct {
		List []lintVariable `json:"list"`
	} `json:"templating"`
}

// Placeholders the scoping variables become before parsing, so that a
// matcher's value tells which variable it uses.
var scopeVars = map[string]string{"job": "JOB", "instance": "INSTANCE", "synapse_job": "SYNAPSE_JOB", "synapse_instance": "SYNAPSE_INSTANCE"}

func usesVar(ms []*labels.Matcher, name, variable string) bool {
	for _, m := range ms {
		if m.Name == name && m.Type == labels.MatchRegexp && m.Value == scopeVars[variable] {
			return true
		}
	}
	return false
}

// lintProblems lists every departure of one dashboard from the rules above.
func lintProblems(file string, data []byte) []string {
	var d lintDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return []string{fmt.Sprintf("%s: %v", file, err)}
	}
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, file+": "+fmt.Sprintf(format, args...)) }

	if d.Editable {
		bad("editable: provisioned dashboards should be \"editable\": false")
	}
	vars := map[string]lintVariable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok || ds.Type != "datasource" || strings.Trim(string(ds.Query), `"`) != "prometheus" {
		bad("no datasource variable of type datasource selecting prometheus")
	}
	dsOK := func(ds *lintDatasource) bool {
		return ds != nil && (ds.UID == "$datasource" || ds.UID == "${datasource}")
	}
	for _, name := range []string{"job", "instance"} {
		v, ok := vars[name]
		if !ok {
			bad("no %s variable", name)
			continue
		}
		label := strings.ToUpper(name[:1]) + name[1:]
		switch {
		case v.Type != "query":
			bad("variable %s is of type %q, not a Prometheus query", name, v.Type)
		case !dsOK(v.Datasource):
			bad("variable %s does not use $datasource", name)
		case v.Label != label:
			bad("variable %s is labelled %q, not %q", name, v.Label, label)
		case !v.Multi || !v.IncludeAll:
			bad("variable %s is not multi-select with All", name)
		case v.AllValue != ".+":
			bad("variable %s has allValue %q, not \".+\"", name, v.AllValue)
		}
	}

	values := map[string]string{}
	for k, v := range ParseValues {
		values[k] = v
	}
	for k, v := range scopeVars {
		values[k] = v
	}
	var walk func(ps []lintPanel)
	walk = func(ps []lintPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if strings.TrimSpace(p.Title) == "" || strings.TrimSpace(p.Description) == "" {
				bad("%s has no title or no description", where)
			}
			if !slices.Contains(validUnits, p.FieldConfig.Defaults.Unit) {
				bad("%s has no or an invalid unit %q", where, p.FieldConfig.Defaults.Unit)
			}
			if !dsOK(p.Datasource) {
				bad("%s does not use $datasource", where)
			}
			for _, t := range p.Targets {
				expr, err := Substitute(t.Expr, values)
				if err != nil {
					bad("%s target %s: %v", where, t.RefID, err)
					continue
				}
				node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
				if err != nil {
					bad("%s target %s does not parse: %v", where, t.RefID, err)
					continue
				}
				for _, sel := range parser.ExtractSelectors(node) {
					job, instance := "job", "instance"
					if usesVar(sel, "job", "synapse_job") {
						job, instance = "synapse_job", "synapse_instance"
					}
					if !usesVar(sel, "job", job) || !usesVar(sel, "instance", instance) {
						bad("%s target %s: a selector without job=~\"$%s\" and instance=~\"$%s\": %s", where, t.RefID, job, instance, t.Expr)
						break
					}
				}
			}
		}
	}
	walk(d.Panels)
	return probs
}

// TestDashboardsPassLinterRules is issue 25's "Done when" 3: both shipped
// dashboards follow the linter's rules listed above.
func TestDashboardsPassLinterRules(t *testing.T) {
	names, err := Names()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mxprobe-overview.json", "mxprobe-synapse.json", "mxprobe-federation.json"} {
		if !slices.Contains(names, want) {
			t.Fatalf("dashboards %v lack %s", names, want)
		}
	}
	for _, n := range names {
		b, err := Files.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range lintProblems(n, b) {
			t.Error(p)
		}
	}
}

// TestLintProblemsCatchesEachRule: a copy of the overview with one defect
// per rule (a nested panel without description or unit, a query without
// the instance matcher, a job variable that is single-select, an editable
// dashboard) gets exactly those problems reported.
func TestLintProblemsCatchesEachRule(t *testing.T) {
	b, err := Files.ReadFile("mxprobe-overview.json")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	d["editable"] = true
	for _, v := range d["templating"].(map[string]any)["list"].([]any) {
		if v.(map[string]any)["name"] == "job" {
			v.(map[string]any)["multi"] = false
		}
	}
	panels := d["panels"].([]any)
	var first, second map[string]any
	for _, p := range panels {
		pm := p.(map[string]any)
		if pm["type"] == "row" {
			continue
		}
		if first == nil {
			first = pm
		} else if second == nil {
			second = pm
		}
	}
	// Collapse the first panel into a row, as Grafana stores collapsed rows.
	row := map[string]any{"type": "row", "title": "collapsed", "id": 999, "collapsed": true, "panels": []any{first}}
	delete(first, "description")
	first["fieldConfig"] = map[string]any{"defaults": map[string]any{}}
	tg := second["targets"].([]any)[0].(map[string]any)
	tg["expr"] = strings.ReplaceAll(tg["expr"].(string), `,instance=~"$instance"`, "")
	var kept []any
	for _, p := range panels {
		if p.(map[string]any)["id"] != first["id"] {
			kept = append(kept, p)
		}
	}
	d["panels"] = append(kept, row)
	broken, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	probs := strings.Join(lintProblems("broken.json", broken), "\n")
	for _, want := range []string{
		"editable",
		"variable job is not multi-select",
		fmt.Sprintf("%q has no title or no description", first["title"]),
		fmt.Sprintf("%q has no or an invalid unit", first["title"]),
		fmt.Sprintf("panel %v %q target A: a selector without", second["id"], second["title"]),
	} {
		if !strings.Contains(probs, want) {
			t.Errorf("problems do not report %q:\n%s", want, probs)
		}
	}
	if n := strings.Count(probs, "\n") + 1; n != 5 {
		t.Errorf("%d problems, want 5:\n%s", n, probs)
	}
}

// TestLinterExclusionsAreTheSynapseRow: dashboards/.lint, the exclusions the
// real linter reads, excuses target-job-rule and target-instance-rule for
// exactly the panels over Synapse's own series (those selecting
// $synapse_job), so running the linter in strict mode is clean without
// hiding anything else.
func TestLinterExclusionsAreTheSynapseRow(t *testing.T) {
	b, err := os.ReadFile(".lint")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Exclusions map[string]struct {
			Entries []struct {
				Dashboard string `yaml:"dashboard"`
				Panel     string `yaml:"panel"`
			} `yaml:"entries"`
		} `yaml:"exclusions"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	names, err := Names()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range names {
		data, err := Files.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		var d lintDashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		var walk func(ps []lintPanel)
		walk = func(ps []lintPanel) {
			for _, p := range ps {
				walk(p.Panels)
				for _, tg := range p.Targets {
					if strings.Contains(tg.Expr, `job=~"$synapse_job"`) {
						want = append(want, d.Title+" / "+p.Title)
						break
					}
				}
			}
		}
		walk(d.Panels)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if len(want) < 10 {
		t.Fatalf("only %d panels over Synapse's own series", len(want))
	}
	for _, rule := range []string{"target-job-rule", "target-instance-rule"} {
		var got []string
		for _, e := range cfg.Exclusions[rule].Entries {
			got = append(got, e.Dashboard+" / "+e.Panel)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf(".lint excludes %s for %v,\nwant exactly the panels over Synapse's own series %v", rule, got, want)
		}
	}
	if len(cfg.Exclusions) != 2 {
		t.Errorf(".lint excludes %d rules; only target-job-rule and target-instance-rule have a reason to be", len(cfg.Exclusions))
	}
}
