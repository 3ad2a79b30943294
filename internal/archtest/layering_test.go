// Package archtest locks the layering of the module in tests: data flows
// config -> scheduler -> probe -> result -> (metrics, alerts, API), and the
// daemon never links the test stand-ins.
package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/mxprobe/mxprobe"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// listPackages runs `go list -deps`-style listing of every package of the
// module (tests excluded: they may use internal/testenv).
func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	for _, must := range []string{"probes", "probes/auth", "exporters/metrics", "alerts", "cmd/mxprobe"} {
		if _, ok := pkgs[module+"/"+must]; !ok {
			t.Fatalf("go list did not list %s: the test would check nothing", must)
		}
	}
	return pkgs
}

// under reports whether path is the module package rel or one below it.
func under(path, rel string) bool {
	p := module + "/" + rel
	return path == p || strings.HasPrefix(path, p+"/")
}

func TestLayering(t *testing.T) {
	pkgs := listPackages(t)
	for path, p := range pkgs {
		switch {
		case under(path, "probes"):
			// Probes never reach the sinks or the daemon, not even
			// through another package.
			for _, d := range p.Deps {
				for _, banned := range []string{"exporters", "alerts", "cmd", "internal/testenv"} {
					if under(d, banned) {
						t.Errorf("%s depends on %s: probes never import exporters, alerts, cmd or test stand-ins", path, d)
					}
				}
			}
		case under(path, "exporters"), under(path, "alerts"):
			// The sinks see the result model and the job list (package
			// probes) only, never a prober's package.
			for _, d := range p.Imports {
				if under(d, "probes") && d != module+"/probes" {
					t.Errorf("%s imports %s: exporters and alerts use package probes (Result, Job) only", path, d)
				}
				if under(d, "cmd") || under(d, "internal/testenv") {
					t.Errorf("%s imports %s", path, d)
				}
			}
		case path == module+"/cmd/mxprobe":
			for _, d := range p.Deps {
				if under(d, "internal/testenv") {
					t.Errorf("the daemon depends on %s: internal/testenv is for tests and the demo only", d)
				}
			}
		}
	}
}
