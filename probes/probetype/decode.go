package probetype

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
)

// DecodeStrict decodes the settings node n of the key `key` into v (a
// pointer to a struct), refusing keys that are not fields of v; errors name
// the line (where(line) gives "file:line: probe \"x\"") and the field as
// key.field.
func DecodeStrict(n *yaml.Node, key string, v any, where func(line int) string) error {
	n = Resolve(n)
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: %s: want a mapping", where(n.Line), key)
	}
	known := config.YAMLKeys(reflect.TypeOf(v).Elem())
	b := &budget{where: where, key: key, line: n.Line}
	if err := checkKeys(n, known, b, 0); err != nil {
		return err
	}
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fmt.Errorf("%s: %s: %v", where(n.Line), key, err)
		}
		// yaml.v3 says "line N: cannot unmarshal ...": one line per problem,
		// named like every other settings error.
		out := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			line := n.Line
			if rest, ok := strings.CutPrefix(e, "line "); ok {
				if num, msg, ok := strings.Cut(rest, ": "); ok {
					if l, err := strconv.Atoi(num); err == nil {
						line, e = l, msg
					}
				}
			}
			out = append(out, fmt.Sprintf("%s: %s: %s", where(line), key, e))
		}
		return errors.New(strings.Join(out, "\n"))
	}
	return nil
}

// Resolve follows an alias (`http: *defaults`) to the node it names.
func Resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// MaxVisits bounds the mapping entries the settings decoder looks at, each
// merged mapping counted every time a merge key brings it in. Settings are a
// few dozen entries; `<<: [*m, *m, ...]` nested a dozen times would be
// 10^12 (yaml.v3's own alias limit only applies once decoding starts, after
// this walk).
const MaxVisits = 10000

// budget counts the visits of one settings section.
type budget struct {
	n     int
	where func(line int) string
	key   string
	line  int // of the section
}

func (b *budget) visit() error {
	b.n++
	if b.n > MaxVisits {
		return fmt.Errorf("%s: %s: aliases and merge keys expand to more than %d entries; write the settings out instead", b.where(b.line), b.key, MaxVisits)
	}
	return nil
}

func isMerge(k *yaml.Node) bool {
	return k.Tag == "!!merge" || (k.Value == "<<" && k.Style == 0 && k.Tag != "!!str")
}

// merged lists the mappings a merge key's value names (`*a` or `[*a, *b]`).
func merged(val *yaml.Node) []*yaml.Node {
	list := []*yaml.Node{val}
	if val.Kind == yaml.SequenceNode {
		list = val.Content
	}
	var out []*yaml.Node
	for _, m := range list {
		if m = Resolve(m); m != nil && m.Kind == yaml.MappingNode {
			out = append(out, m)
		}
	}
	return out
}

// checkKeys refuses keys of the mapping n that are not known, including
// those a merge key (`<<: *defaults`, `<<: [*a, *b]`) brings in.
func checkKeys(n *yaml.Node, known map[string]bool, b *budget, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%s: %s: merge keys nested too deep", b.where(n.Line), b.key)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], Resolve(n.Content[i+1])
		if err := b.visit(); err != nil {
			return err
		}
		if isMerge(k) {
			for _, m := range merged(val) {
				if err := checkKeys(m, known, b, depth+1); err != nil {
					return err
				}
			}
			continue
		}
		if !known[k.Value] {
			return fmt.Errorf("%s: %s.%s: unknown field", b.where(k.Line), b.key, k.Value)
		}
	}
	return nil
}

// Entries returns the key and value nodes of the mapping n as decoding sees
// them: merge keys expanded (a key of n itself wins over a merged one, an
// earlier merged mapping over a later one), each key once. It fails past
// MaxVisits like DecodeStrict.
func Entries(n *yaml.Node) ([][2]*yaml.Node, error) {
	n = Resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	b := &budget{where: func(line int) string { return fmt.Sprintf("line %d", line) }, key: "settings", line: n.Line}
	var out [][2]*yaml.Node
	seen := map[string]bool{}
	var walk func(m *yaml.Node, depth int) error
	walk = func(m *yaml.Node, depth int) error {
		if depth > 16 {
			return fmt.Errorf("line %d: merge keys nested too deep", m.Line)
		}
		var merges []*yaml.Node
		for i := 0; i+1 < len(m.Content); i += 2 {
			k := m.Content[i]
			if err := b.visit(); err != nil {
				return err
			}
			if isMerge(k) {
				merges = append(merges, merged(Resolve(m.Content[i+1]))...)
				continue
			}
			if !seen[k.Value] {
				seen[k.Value] = true
				out = append(out, [2]*yaml.Node{k, m.Content[i+1]})
			}
		}
		for _, mm := range merges {
			if err := walk(mm, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(n, 0); err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeInto decodes the settings node n of probe p strictly into a new S
// under key (n nil: S's zero value, for the defaults to fill), and returns
// where to name the settings in messages: "file:line: probe \"x\"", at the
// section's line when it has one.
func DecodeInto[S any](c *config.Config, p *config.Probe, n *yaml.Node, key string) (*S, string, error) {
	w := c.ProbeWhere(p)
	s := new(S)
	if n == nil {
		return s, w, nil
	}
	where := func(line int) string { return fmt.Sprintf("%s:%d: probe %q", c.File, line, p.Name) }
	if n.Line > 0 {
		w = where(n.Line)
	}
	if err := DecodeStrict(n, key, s, where); err != nil {
		return nil, w, err
	}
	return s, w, nil
}
