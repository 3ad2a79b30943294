package archtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// constantTables are the only package-level variables of the module: each
// holds a table, a compiled regexp, a metric descriptor, a template or
// embedded files, is set once at initialisation and never written after
// (the test checks that no file of the module, tests included, assigns to
// one, writes an element of one or takes its address, and that its
// initialiser is a literal or one of the constructors in tableConstructors).
// Go has no constant maps, slices, regexps or descriptors, so these are
// vars; anything else (a counter, a cache, a client, a flag target, a
// setting cmd overwrites) belongs in a value the daemon holds (see
// cmd/mxprobe/assemble.go).
var constantTables = map[string]string{
	// config: validation tables and Synapse's documented defaults.
	"config.nameRe":                "regexp of rule names",
	"config.labelNameRe":           "regexp of label names",
	"config.quantileRe":            "regexp of quantile signals (p50, p99.9)",
	"config.reservedLabels":        "table of labels the alert engine sets itself",
	"config.defaultRcMessage":      "Synapse's default rc_message (a constant struct)",
	"config.defaultRcRoomCreation": "Synapse's default rc_room_creation",
	"config.defaultRcJoinsLocal":   "Synapse's default rc_joins.local",
	"config.defaultRcInvitesRoom":  "Synapse's default rc_invites.per_room",
	"config.defaultRcInvitesUser":  "Synapse's default rc_invites.per_user",
	"config.defaultRcInvitesIssue": "Synapse's default rc_invites.per_issuer",
	"config.defaultRcLoginAddress": "Synapse's default rc_login.address",
	"config.defaultRcLoginAccount": "Synapse's default rc_login.account",
	"config.placeholderTokens":     "table of example tokens a configuration must not use",
	"config.cronParser":            "the cron spec parser (its options, no state)",
	"config.knownMethods":          "table of login methods",
	// dashboards: the embedded dashboards and the Grafana query grammar.
	"dashboards.Files":                       "embedded dashboard files (read-only)",
	"dashboards.labelValuesRe":               "regexp of Grafana's label_values()",
	"dashboards.labelOnlyRe":                 "regexp of label_values(label)",
	"dashboards.queryResultRe":               "regexp of query_result()",
	"dashboards.labelNamesRe":                "regexp of label_names()",
	"dashboards.varRe":                       "regexp of dashboard variable references",
	"dashboards.ParseValues":                 "table of Grafana's built-in variables' stand-in values",
	"exporters/metrics.DurationBuckets":      "table of histogram buckets",
	"exporters/web.templateFS":               "embedded status page template (read-only)",
	"exporters/web.statusTmpl":               "the parsed status page template",
	"probes/auth.refusedClasses":             "table of failure classes a login budget counts as refused",
	"probes/auth.loginRequired":              "table of OAuth errors that mean a new login",
	"probes/httpcheck.httpToken":             "regexp of an HTTP token (header names, methods)",
	"probes/matrix.roundtripSteps":           "table of the round trip's steps",
	"probes/matrix.roomMessageSteps":         "table of room_message's steps",
	"probes/matrix.markerType":               "the marker state event type (a constant struct)",
	"probes/synapse.SyncTags":                "table of Synapse's sync tags",
	"probes/synapse.DefaultServlets":         "table of servlets watched by default",
	"probes/synapse.DefaultLongPollServlets": "table of long-poll servlets",
	"probes/synapse.wanted":                  "table of the metric names parsed (built once by a function literal)",
	"probes/synapse.metricTypes":             "table of exposition format types",
	"probes/synapse.ratioCounts":             "table of ratio signals to their counts",
	"probes/synapse.quantiles":               "table of quantiles to signal names",
	// Test support (linked into tests and the demo only, never the daemon:
	// TestLayering).
	"internal/testenv/fuzzmut.Tokens":               "table of fuzz mutation tokens",
	"internal/testenv/masemu.usernameRe":            "regexp of MAS user names",
	"internal/testenv/masemu.publicSuffixes":        "table of public suffixes",
	"internal/testenv/masemu.pageTmpl":              "parsed page template",
	"internal/testenv/masemu.emailFormTmpl":         "parsed e-mail form template",
	"internal/testenv/masemu.masPages":              "parsed MAS page templates",
	"internal/testenv/masemu.deviceScopeRe":         "regexp of device scopes",
	"internal/testenv.optionalProbeTypes":           "table of probe types a harness may leave out",
	"internal/testenv/synapsereplay.sampleRE":       "regexp of exposition samples",
	"internal/testenv/synapsereplay.labelRE":        "regexp of exposition labels",
	"internal/testenv/synapsereplay.pages":          "embedded recorded pages (read-only)",
	"internal/testenv/synapsereplay.Sequence":       "table of the replay's page order",
	"internal/testenv/synapsereplay.commonFamilies": "table of families every worker exposes",
	"internal/testenv/synapsereplay.databaseWide":   "table of database-wide families",
	"internal/testenv/synapsereplay.Workers":        "table of the replayed workers",
	"internal/testenv/synlimit.clientPrefix":        "regexp of client API paths",
	"internal/testenv/synlimit.reCreate":            "regexp of /createRoom",
	"internal/testenv/synlimit.reInvite":            "regexp of invites",
	"internal/testenv/synlimit.reJoinRoom":          "regexp of room joins",
	"internal/testenv/synlimit.reJoinAlias":         "regexp of alias joins",
	"internal/testenv/synlimit.reMembership":        "regexp of membership changes",
	"internal/testenv/synlimit.reSend":              "regexp of sends",
	"internal/testenv/synlimit.reLogin":             "regexp of /login",
	"internal/testenv/synlimit.reOverride":          "regexp of the rate limit override admin API",
	"internal/tools/soak.faults":                    "table of the soak's faults",
}

// testHarnessState is the one exception that is state, not a table: the
// homeservers a test binary shares (testenv.SharedDendrite,
// testenv.SharedSynapse), started on first use and stopped by testenv.Main.
// Tests of many packages call these helpers with only a testing.TB, so the
// per-process server has nowhere else to live; the daemon never links
// internal/testenv (TestLayering). The check still requires them to be
// written inside package testenv only.
var testHarnessState = map[string]string{
	"internal/testenv.sharedMu":     "guards the shared Dendrite",
	"internal/testenv.shared":       "the shared Dendrite of this test binary",
	"internal/testenv.sharedErr":    "why the shared Dendrite could not start",
	"internal/testenv.sharedSynMu":  "guards the shared Synapse",
	"internal/testenv.sharedSyn":    "the shared Synapse of this test binary",
	"internal/testenv.sharedSynErr": "why the shared Synapse could not start",
}

// tableConstructors are the calls whose result is a constant table,
// regexp, descriptor or template (package name.function).
var tableConstructors = map[string]bool{
	"regexp.MustCompile": true,
	"prometheus.NewDesc": true,
	"template.Must":      true,
	"cron.NewParser":     true,
}

// srcPkg is one package's parsed sources.
type srcPkg struct {
	path  string      // import path relative to the module ("config")
	files []*ast.File // non-test files
	tests []*ast.File // test files, in the package or package_test
}

func loadSources(t *testing.T, fset *token.FileSet) []srcPkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Dir,GoFiles,TestGoFiles,XTestGoFiles", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []srcPkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath, Dir                    string
			GoFiles, TestGoFiles, XTestGoFiles []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		sp := srcPkg{path: strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")}
		parse := func(names []string) []*ast.File {
			var fs []*ast.File
			for _, n := range names {
				f, err := parser.ParseFile(fset, filepath.Join(p.Dir, n), nil, parser.ParseComments)
				if err != nil {
					t.Fatal(err)
				}
				fs = append(fs, f)
			}
			return fs
		}
		sp.files = parse(p.GoFiles)
		sp.tests = parse(append(p.TestGoFiles, p.XTestGoFiles...))
		pkgs = append(pkgs, sp)
	}
	return pkgs
}

// TestNoPackageState: no package of the module (cmd, probes, exporters,
// alerts, config, test support, tools) has package-level state or an init
// function: the daemon is assembled explicitly (cmd/mxprobe/assemble.go)
// and holds its state in values. Only the constant tables above may be
// package-level variables.
func TestNoPackageState(t *testing.T) {
	fset := token.NewFileSet()
	pkgs := loadSources(t, fset)
	checked := map[string]bool{}
	for _, p := range pkgs {
		checked[p.path] = len(p.files) > 0
	}
	for _, must := range []string{"cmd/mxprobe", "cmd/mxprobe-demo", "probes", "probes/mxclient", "probes/auth", "exporters/web", "exporters/metrics", "alerts", "config", "internal/testenv"} {
		if !checked[must] {
			t.Fatalf("package %s was not checked: the test would miss it", must)
		}
	}
	allow := map[string]string{}
	for k, v := range constantTables {
		allow[k] = v
	}
	for k, v := range testHarnessState {
		allow[k] = v
	}
	for _, e := range checkNoState(fset, pkgs, allow, testHarnessState) {
		t.Error(e)
	}
}

// TestNoPackageStateCatches: the check reports a mutable variable, an
// allowlisted table that is written (directly, by element, by address), an
// allowlisted variable that is no table, an init function and a stale
// allowlist entry, and leaves a clean table and a shadowing local alone.
func TestNoPackageStateCatches(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, filepath.Join("testdata", "nostate", "state.go"), nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	allow := map[string]string{
		"x/state.table":  "a table",
		"x/state.client": "claimed to be a table",
		"x/state.level":  "a table",
		"x/state.clean":  "a table",
		"x/state.gone":   "a variable that no longer exists",
	}
	got := checkNoState(fset, []srcPkg{{path: "x/state", files: []*ast.File{f}}}, allow, nil)
	want := []string{
		"package-level var counter",
		"package-level var mu",
		"init function",
		"x/state.table is written",
		"x/state.level has its address taken",
		"x/state.client is initialised by",
		"x/state.gone names no package-level var",
	}
	joined := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("the check did not report %q; it reported:\n%s", w, joined)
		}
	}
	if strings.Contains(joined, "clean") {
		t.Errorf("the check reported the clean table or the shadowing local:\n%s", joined)
	}
	if len(got) != len(want) {
		t.Errorf("%d findings, want %d:\n%s", len(got), len(want), joined)
	}
}

// checkNoState returns one line per violation in pkgs. allow names the
// package-level vars ("path.Name") that may exist; internal ones (of
// testHarnessState) may be written inside their own package, no other may
// be written at all.
func checkNoState(fset *token.FileSet, pkgs []srcPkg, allow, internal map[string]string) []string {
	var errs []string
	report := func(pos token.Pos, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s: %s", fset.Position(pos), fmt.Sprintf(format, args...)))
	}
	// vars: every package-level var, by "path.Name"; specs: their
	// declarations (to tell them from locals of the same name).
	vars := map[string]bool{}
	specs := map[*ast.ValueSpec]bool{}
	for _, p := range pkgs {
		for _, f := range p.files {
			for _, decl := range f.Decls {
				switch d := decl.(type) {
				case *ast.GenDecl:
					if d.Tok != token.VAR {
						continue
					}
					for _, spec := range d.Specs {
						vs := spec.(*ast.ValueSpec)
						specs[vs] = true
						for i, n := range vs.Names {
							if n.Name == "_" {
								continue
							}
							key := p.path + "." + n.Name
							vars[key] = true
							if allow[key] == "" {
								report(n.Pos(), "package-level var %s: keep state in the stores or the daemon, behaviour in functions (or, for a constant table, allowlist it in internal/archtest/nostate_test.go)", n.Name)
								continue
							}
							if internal[key] != "" {
								continue
							}
							if why := notATable(vs, i, d); why != "" {
								report(n.Pos(), "%s is initialised by %s: only tables, regexps, descriptors, templates and embedded files may be package-level", key, why)
							}
						}
					}
				case *ast.FuncDecl:
					if d.Recv == nil && d.Name.Name == "init" {
						report(d.Pos(), "init function: register behaviour explicitly (cmd/mxprobe/assemble.go, probetypes.go)")
					}
				}
			}
		}
	}
	var stale []string
	for k := range allow {
		if !vars[k] {
			stale = append(stale, k)
		}
	}
	sort.Strings(stale)
	for _, k := range stale {
		errs = append(errs, fmt.Sprintf("allowlist entry %s names no package-level var: remove it", k))
	}

	// Writes: in every file of the module, tests included.
	importPaths := map[string]string{} // full import path -> relative
	for _, p := range pkgs {
		importPaths[module+"/"+p.path] = p.path
	}
	for _, p := range pkgs {
		for _, f := range append(append([]*ast.File{}, p.files...), p.tests...) {
			// The file's imports of module packages, by local name.
			imports := map[string]string{}
			for _, im := range f.Imports {
				ip, _ := strconv.Unquote(im.Path.Value)
				rel, ok := importPaths[ip]
				if !ok {
					continue
				}
				name := ip[strings.LastIndex(ip, "/")+1:]
				if im.Name != nil {
					name = im.Name.Name
				}
				imports[name] = rel
			}
			inPkg := f.Name.Name == p.files0Name()
			// target names the package-level var e refers to, or "".
			target := func(e ast.Expr) string {
				for {
					switch x := e.(type) {
					case *ast.ParenExpr:
						e = x.X
						continue
					case *ast.IndexExpr:
						e = x.X
						continue
					case *ast.IndexListExpr:
						e = x.X
						continue
					case *ast.StarExpr:
						e = x.X
						continue
					case *ast.SelectorExpr:
						if id, ok := x.X.(*ast.Ident); ok && id.Obj == nil {
							if rel, ok := imports[id.Name]; ok {
								if key := rel + "." + x.Sel.Name; vars[key] {
									return key
								}
								return ""
							}
						}
						e = x.X // a field of a var
						continue
					case *ast.Ident:
						if !inPkg {
							return ""
						}
						key := p.path + "." + x.Name
						if !vars[key] {
							return ""
						}
						if x.Obj != nil {
							if vs, ok := x.Obj.Decl.(*ast.ValueSpec); !ok || !specs[vs] {
								return "" // a local of the same name
							}
						}
						return key
					default:
						return ""
					}
				}
			}
			written := func(key string, pos token.Pos, how string) {
				if allow[key] == "" {
					return // reported as a package-level var already
				}
				if internal[key] != "" && strings.HasPrefix(key, p.path+".") && inPkg {
					return
				}
				report(pos, "%s %s after initialisation: package state", key, how)
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch s := n.(type) {
				case *ast.AssignStmt:
					if s.Tok == token.DEFINE {
						return true
					}
					for _, l := range s.Lhs {
						if key := target(l); key != "" {
							written(key, l.Pos(), "is written")
						}
					}
				case *ast.IncDecStmt:
					if key := target(s.X); key != "" {
						written(key, s.X.Pos(), "is written")
					}
				case *ast.RangeStmt:
					if s.Tok == token.ASSIGN {
						for _, l := range []ast.Expr{s.Key, s.Value} {
							if l == nil {
								continue
							}
							if key := target(l); key != "" {
								written(key, l.Pos(), "is written")
							}
						}
					}
				case *ast.UnaryExpr:
					if s.Op == token.AND {
						if key := target(s.X); key != "" {
							written(key, s.X.Pos(), "has its address taken (it may be written through it)")
						}
					}
				}
				return true
			})
		}
	}
	return errs
}

// files0Name is the package clause of the package's non-test files (test
// files of package x_test see its vars through an import only).
func (p srcPkg) files0Name() string {
	if len(p.files) == 0 {
		return ""
	}
	return p.files[0].Name.Name
}

// notATable says why the i-th name of vs is not initialised as a constant
// table, or "" if it is: a composite literal, a call of a constructor in
// tableConstructors or of a function literal (a table computed once), or
// no value with a //go:embed directive.
func notATable(vs *ast.ValueSpec, i int, d *ast.GenDecl) string {
	if i >= len(vs.Values) {
		for _, cg := range []*ast.CommentGroup{vs.Doc, d.Doc} {
			if cg == nil {
				continue
			}
			for _, c := range cg.List {
				if strings.HasPrefix(c.Text, "//go:embed ") {
					return ""
				}
			}
		}
		return "nothing (its zero value is state to fill)"
	}
	v := vs.Values[i]
	switch x := v.(type) {
	case *ast.CompositeLit:
		return ""
	case *ast.CallExpr:
		if _, ok := x.Fun.(*ast.FuncLit); ok {
			return ""
		}
		if sel, ok := x.Fun.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && tableConstructors[id.Name+"."+sel.Sel.Name] {
				return ""
			}
		}
	}
	return fmt.Sprintf("%T", v)
}
