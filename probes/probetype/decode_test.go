package probetype

import (
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestDecodeStrict: a type's settings are decoded strictly, and every
// problem names the file, the line and the field.
func TestDecodeStrict(t *testing.T) {
	type settings struct {
		URL   string `yaml:"url"`
		Count int    `yaml:"count"`
		Tags  []int  `yaml:"tags"`
		Plain string // no tag: yaml.v3 decodes it as "plain"
	}
	where := func(line int) string { return fmt.Sprintf("c.yml:%d: probe %q", line, "p") }
	node := func(src string) *yaml.Node {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		return doc.Content[0]
	}
	var s settings
	if err := DecodeStrict(node("url: http://x\ncount: 3\nplain: p\n"), "x", &s, where); err != nil || s.URL != "http://x" || s.Count != 3 || s.Plain != "p" {
		t.Fatalf("valid settings: %+v, %v", s, err)
	}
	// Anchors, aliases and merge keys decode as in the rest of the file,
	// and a merged mapping's keys are checked too.
	value := func(src, key string) *yaml.Node {
		m := node(src)
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				return m.Content[i+1]
			}
		}
		t.Fatalf("no %s in %q", key, src)
		return nil
	}
	s = settings{}
	if err := DecodeStrict(value("base: &b {url: http://b, count: 2}\nx: *b\n", "x"), "x", &s, where); err != nil || s.URL != "http://b" || s.Count != 2 {
		t.Errorf("alias: %+v, %v", s, err)
	}
	s = settings{}
	if err := DecodeStrict(value("base: &b {url: http://b, count: 2}\nx: {<<: *b, count: 5}\n", "x"), "x", &s, where); err != nil || s.URL != "http://b" || s.Count != 5 {
		t.Errorf("merge key: %+v, %v", s, err)
	}
	if err := DecodeStrict(value("base: &b {url: http://b, bogus: 2}\nx: {<<: [*b], count: 5}\n", "x"), "x", &settings{}, where); err == nil ||
		err.Error() != `c.yml:1: probe "p": x.bogus: unknown field` {
		t.Errorf("unknown key in a merged mapping: %v", err)
	}
	for _, tc := range []struct{ src, want string }{
		{"url: http://x\nbogus: 1\n", `c.yml:2: probe "p": x.bogus: unknown field`},
		{"- a\n- b\n", `c.yml:1: probe "p": x: want a mapping`},
		{"url: http://x\ncount: many\ntags: [1, two]\n", "c.yml:2: probe \"p\": x: cannot unmarshal !!str `many` into int\n" +
			"c.yml:3: probe \"p\": x: cannot unmarshal !!str `two` into int"},
	} {
		err := DecodeStrict(node(tc.src), "x", &settings{}, where)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\ngot  %v\nwant %s", strings.TrimSpace(tc.src), err, tc.want)
		}
	}
}

// fanOut is a settings section whose merge keys expand fan^depth times:
// each level merges the previous one fan times.
func fanOut(fan, depth int) string {
	var b strings.Builder
	b.WriteString("l0: &m0 {url: http://x}\n")
	for i := 1; i <= depth; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*m%d, ", i-1), fan), ", ")
		fmt.Fprintf(&b, "l%d: &m%d {<<: [%s]}\n", i, i, refs)
	}
	fmt.Fprintf(&b, "x: {<<: *m%d, count: 1}\n", depth)
	return b.String()
}

// TestDecodeStrictVisitBudget: a merge-key fan-out (10 at depth 12, 10^12
// entries once expanded, which main walked without end) is refused after
// MaxVisits entries with an error naming the section; a moderate use of
// merge keys decodes. Entries, used on settings by --target, has the same
// budget.
func TestDecodeStrictVisitBudget(t *testing.T) {
	type settings struct {
		URL   string `yaml:"url"`
		Count int    `yaml:"count"`
	}
	where := func(line int) string { return fmt.Sprintf("c.yml:%d: probe %q", line, "p") }
	section := func(src string) *yaml.Node {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		m := doc.Content[0]
		return m.Content[len(m.Content)-1]
	}
	src := fanOut(10, 12)
	if len(src) > 1024 {
		t.Fatalf("the hostile file is %d bytes", len(src))
	}
	n := section(src)
	want := fmt.Sprintf(`c.yml:%d: probe "p": x: aliases and merge keys expand to more than %d entries`, n.Line, MaxVisits)
	if err := DecodeStrict(n, "x", &settings{}, where); err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("fan-out: %v", err)
	}
	if _, err := Entries(n); err == nil {
		t.Fatal("Entries walked the fan-out")
	}
	var s settings
	if err := DecodeStrict(section(fanOut(3, 4)), "x", &s, where); err != nil || s.URL != "http://x" || s.Count != 1 {
		t.Fatalf("3^4 merge: %+v %v", s, err)
	}
	e, err := Entries(section(fanOut(3, 4)))
	if err != nil || len(e) != 2 {
		t.Fatalf("entries: %v %v", e, err)
	}
}
