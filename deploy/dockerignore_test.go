package deploy

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// dockerignore is a parsed .dockerignore, matched as Docker's builder
// matches it (github.com/moby/patternmatcher): patterns are cleaned and
// relative to the context root, "*" and "?" stay within a path element,
// "**" spans any number of them, a pattern that matches a directory
// excludes everything under it, "!" re-includes, and the last matching
// pattern decides.
type dockerignore []ignorePattern

type ignorePattern struct {
	text    string
	re      *regexp.Regexp
	exclude bool // false for a "!" exception
}

func parseDockerignore(t *testing.T, lines []string) dockerignore {
	t.Helper()
	var out dockerignore
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		p := ignorePattern{text: l, exclude: true}
		if strings.HasPrefix(l, "!") {
			p.exclude, l = false, strings.TrimSpace(l[1:])
		}
		l = strings.TrimPrefix(path.Clean(filepath.ToSlash(l)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch c := l[i]; {
			case c == '*' && i+1 < len(l) && l[i+1] == '*':
				i++
				if i+1 < len(l) && l[i+1] == '/' {
					i++
					re.WriteString("(?:.*/)?")
				} else {
					re.WriteString(".*")
				}
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		p.re = regexp.MustCompile(re.String())
		out = append(out, p)
	}
	return out
}

// excluded reports whether the context path rel (slash-separated) is left
// out of the build context.
func (d dockerignore) excluded(rel string) bool {
	ex := false
	for _, p := range d {
		// The path or one of its parent directories.
		for q := rel; q != "." && q != "/" && q != ""; q = path.Dir(q) {
			if p.re.MatchString(q) {
				ex = p.exclude
				break
			}
		}
	}
	return ex
}

func readLines(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// secretFiles are the files the repository's .gitignore files treat as
// secret: the ones operators fill in from a tracked X.example (compose's
// .env and secret files, the Kubernetes secrets), and every entry of the
// .gitignore files under deploy/, which exist for them. Each must be
// ignored by git, or it is no secret the repository keeps.
func secretFiles(t *testing.T, root string) []string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	seen := map[string]bool{}
	var files []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			files = append(files, p)
		}
	}
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if s, ok := strings.CutSuffix(f, ".example"); ok {
			add(s)
		}
		if strings.HasPrefix(f, "deploy/") && path.Base(f) == ".gitignore" {
			for _, l := range readLines(t, filepath.Join(root, f)) {
				l = strings.TrimSpace(l)
				if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "!") || strings.ContainsAny(l, "*?[") {
					continue
				}
				add(path.Join(path.Dir(f), strings.TrimPrefix(l, "/")))
			}
		}
	}
	for _, f := range files {
		cmd := exec.Command("git", "-C", root, "check-ignore", "-q", "--no-index", f)
		if err := cmd.Run(); err != nil {
			t.Errorf("%s is filled in from %s.example but git does not ignore it (%v): add it to a .gitignore", f, f, err)
		}
	}
	return files
}

// buildInputs are the files `go build ./cmd/mxprobe` reads in the build
// stage: go.mod, go.sum, and the Go and embedded files of every package of
// the module it compiles.
func buildInputs(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{.Dir}}|{{join .GoFiles ","}}|{{join .EmbedFiles ","}}{{end}}{{end}}`, "./cmd/mxprobe")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		if len(parts) != 3 {
			continue
		}
		rel, err := filepath.Rel(root, parts[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(strings.Split(parts[1], ","), strings.Split(parts[2], ",")...) {
			if f != "" {
				files = append(files, path.Join(filepath.ToSlash(rel), f))
			}
		}
	}
	if len(files) < 50 {
		t.Fatalf("only %d build inputs", len(files))
	}
	return files
}

// dockerignoreProblems lists what is wrong with d: a secret or tool file
// that reaches the build context, or a build input that does not.
func dockerignoreProblems(d dockerignore, secrets, inputs []string) []string {
	var probs []string
	for _, f := range append([]string{".git", ".git/config", ".tools/bin/dendrite", "bin/mxprobe"}, secrets...) {
		if !d.excluded(f) {
			probs = append(probs, fmt.Sprintf("%s is sent to the build context", f))
		}
	}
	for _, f := range inputs {
		if d.excluded(f) {
			probs = append(probs, fmt.Sprintf("%s is needed by the build but left out of the context", f))
		}
	}
	return probs
}

// TestDockerignore is issue 25's item 3: the root .dockerignore keeps .git,
// .tools, bin and every secret file the .gitignore files keep out of git
// out of `COPY . .`, and keeps in everything the build compiles.
func TestDockerignore(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(root, ".dockerignore"))
	secrets := secretFiles(t, root)
	if len(secrets) < 6 {
		t.Fatalf("only %d secret files found: %v", len(secrets), secrets)
	}
	inputs := buildInputs(t, root)
	for _, p := range dockerignoreProblems(parseDockerignore(t, lines), secrets, inputs) {
		t.Error(p)
	}
	t.Logf("%d secret files kept out, %d build inputs kept in", len(secrets), len(inputs))

	// The check fails when one secret pattern is missing, or when a
	// pattern swallows source files.
	for _, c := range []struct{ drop, add, want string }{
		{drop: "**/peer-password", want: "deploy/kubernetes/peer-password is sent"},
		{add: "**/*.go", want: "cmd/mxprobe/main.go is needed"},
		{add: "**/templates", want: "exporters/web/templates/status.html is needed"},
	} {
		var mod []string
		found := c.drop == ""
		for _, l := range lines {
			if strings.TrimSpace(l) == c.drop {
				found = true
				continue
			}
			mod = append(mod, l)
		}
		if !found {
			t.Fatalf(".dockerignore has no line %q; update this test", c.drop)
		}
		if c.add != "" {
			mod = append(mod, c.add)
		}
		probs := strings.Join(dockerignoreProblems(parseDockerignore(t, mod), secrets, inputs), "\n")
		if !strings.Contains(probs, c.want) {
			t.Errorf("without %q / with %q: problems %q, want %q", c.drop, c.add, probs, c.want)
		}
	}
}

func TestDockerignoreMatcher(t *testing.T) {
	d := parseDockerignore(t, []string{"# c", ".git", "/bin", "**/api-token", "*.test", "docs/*.md", "!docs/keep.md"})
	for p, want := range map[string]bool{
		".git": true, ".git/objects/ab": true, "bin/mxprobe": true, "cmd/bin/x": false,
		"api-token": true, "deploy/compose/api-token": true, "deploy/compose/api-token.example": false,
		"x.test": true, "cmd/x.test": false, "docs/a.md": true, "docs/keep.md": false, "docs/sub/a.md": false,
	} {
		if got := d.excluded(p); got != want {
			t.Errorf("%s: excluded %v, want %v", p, got, want)
		}
	}
}
