package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoPackageState: the daemon is assembled explicitly (assemble.go), so
// the commands under cmd/ (the daemon and the demo) have no package-level
// variable (behaviour or state) and no init function. Constants, types and
// functions are fine.
func TestNoPackageState(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	demo, err := filepath.Glob("../mxprobe-demo/*.go")
	if err != nil || len(demo) < 5 {
		t.Fatalf("the demo's sources: %d files, %v", len(demo), err)
	}
	files = append(files, demo...)
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.GenDecl:
				if d.Tok != token.VAR {
					continue
				}
				for _, spec := range d.Specs {
					for _, n := range spec.(*ast.ValueSpec).Names {
						t.Errorf("%s: package-level var %s: keep state in the stores or the daemon, behaviour in functions", fset.Position(n.Pos()), n.Name)
					}
				}
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.Name == "init" {
					t.Errorf("%s: init function: register behaviour explicitly (assemble.go, probetypes.go)", fset.Position(d.Pos()))
				}
			}
		}
	}
	if checked < 5 {
		t.Fatalf("only %d source files checked: is the test in the right directory?", checked)
	}
}
