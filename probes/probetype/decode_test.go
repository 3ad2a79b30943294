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
