// Package dashboards ships mxprobe's Grafana dashboards (provisioning-ready
// JSON, embedded here so tests and tools can read them) and a checker that
// parses every panel and template-variable query with the Prometheus parser
// and lists the metric names they use.
package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Files holds the dashboards (*.json) and the Grafana provisioning file.
//
//go:embed *.json provisioning.yml
var Files embed.FS

// Query is one PromQL expression of a dashboard: a panel target or the
// selector of a template variable.
type Query struct {
	Dashboard string
	// Where names the panel (and refId) or the variable.
	Where string
	Expr  string
	// Variable is true for a template-variable query.
	Variable bool
	// Instant is true for instant (table, stat) targets.
	Instant bool
}

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string   `json:"title"`
	Type    string   `json:"type"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"`
}

type target struct {
	RefID   string `json:"refId"`
	Expr    string `json:"expr"`
	Instant bool   `json:"instant"`
}

type variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

// Names returns the dashboard files.
func Names() ([]string, error) {
	return fs.Glob(Files, "*.json")
}

// Load returns the queries of the dashboard JSON in data.
func Load(name string, data []byte) ([]Query, error) {
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if d.UID == "" || d.Title == "" {
		return nil, fmt.Errorf("%s: a dashboard needs a uid and a title", name)
	}
	var qs []Query
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				qs = append(qs, Query{Dashboard: name, Where: fmt.Sprintf("panel %q target %s", p.Title, t.RefID), Expr: t.Expr, Instant: t.Instant})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, fmt.Errorf("%s: variable %s: unreadable query", name, v.Name)
			}
			q = obj.Query
		}
		expr, err := VariableExpr(q)
		if err != nil {
			return nil, fmt.Errorf("%s: variable %s: %v", name, v.Name, err)
		}
		if expr != "" {
			qs = append(qs, Query{Dashboard: name, Where: "variable " + v.Name, Expr: expr, Variable: true})
		}
	}
	return qs, nil
}

// All loads the queries of every shipped dashboard.
func All() ([]Query, error) {
	names, err := Names()
	if err != nil {
		return nil, err
	}
	var all []Query
	for _, n := range names {
		data, err := Files.ReadFile(n)
		if err != nil {
			return nil, err
		}
		qs, err := Load(n, data)
		if err != nil {
			return nil, err
		}
		all = append(all, qs...)
	}
	return all, nil
}

var (
	labelValuesRe = regexp.MustCompile(`^\s*label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	labelOnlyRe   = regexp.MustCompile(`^\s*label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
	queryResultRe = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
	labelNamesRe  = regexp.MustCompile(`^\s*label_names\(\s*\)\s*$`)
)

// VariableExpr returns the PromQL inside a Grafana Prometheus variable query
// (label_values(expr, label), query_result(expr)); "" when there is none.
func VariableExpr(q string) (string, error) {
	switch {
	case labelOnlyRe.MatchString(q), labelNamesRe.MatchString(q):
		return "", nil
	}
	if m := labelValuesRe.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if m := queryResultRe.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	return "", fmt.Errorf("unsupported variable query %q (use label_values(expr, label) or query_result(expr))", q)
}

var varRe = regexp.MustCompile(`\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)`)

// Substitute replaces Grafana variables ($name, ${name}) in expr with values;
// a variable missing from values is an error.
func Substitute(expr string, values map[string]string) (string, error) {
	var missing []string
	out := varRe.ReplaceAllStringFunc(expr, func(m string) string {
		sm := varRe.FindStringSubmatch(m)
		name := sm[1]
		if name == "" {
			name = sm[2]
		}
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for variable(s) %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// ParseValues are variable values that make any dashboard query parse: the
// interval variables become durations, the others match anything.
var ParseValues = map[string]string{
	"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "window": "1h",
	"datasource": "prometheus", "job": ".*", "instance": ".*", "synapse_job": ".+", "probe": ".*", "tenant": ".*",
	"step": ".*", "servlet": ".*", "worker": ".*", "synapse_instance": ".+",
}

// MetricNames parses expr (variables substituted with values) and returns
// the metric names it selects, sorted and unique. A selector without a
// metric name (only label matchers) is an error: the checker could not vouch
// for it.
func MetricNames(expr string, values map[string]string) ([]string, error) {
	s, err := Substitute(expr, values)
	if err != nil {
		return nil, err
	}
	p := parser.NewParser(parser.Options{})
	node, err := p.ParseExpr(s)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	var selErr error
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					selErr = fmt.Errorf("selector %s matches metric names by pattern", vs)
				}
				name = m.Value
			}
		}
		if name == "" {
			selErr = fmt.Errorf("selector %s names no metric", vs)
			return nil
		}
		set[name] = true
		return nil
	})
	if selErr != nil {
		return nil, selErr
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Problem is a query the checker rejects.
type Problem struct {
	Query Query
	Err   string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s, %s: %s\n    %s", p.Query.Dashboard, p.Query.Where, p.Err, p.Query.Expr)
}

// Check parses every query and checks each metric it names with known.
func Check(qs []Query, known func(name string) bool) []Problem {
	var probs []Problem
	for _, q := range qs {
		names, err := MetricNames(q.Expr, ParseValues)
		if err != nil {
			probs = append(probs, Problem{q, "does not parse: " + err.Error()})
			continue
		}
		for _, n := range names {
			if !known(n) {
				probs = append(probs, Problem{q, fmt.Sprintf("metric %s is exported by neither mxprobe nor Synapse", n)})
			}
		}
	}
	return probs
}
