package probetype

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/config"
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
	if err := checkKeys(n, known, key, where, 0); err != nil {
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

// checkKeys refuses keys of the mapping n that are not known, including
// those a merge key (`<<: *defaults`, `<<: [*a, *b]`) brings in.
func checkKeys(n *yaml.Node, known map[string]bool, key string, where func(line int) string, depth int) error {
	if depth > 16 {
		return fmt.Errorf("%s: %s: merge keys nested too deep", where(n.Line), key)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], Resolve(n.Content[i+1])
		if k.Tag == "!!merge" || (k.Value == "<<" && k.Style == 0 && k.Tag != "!!str") {
			merged := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				merged = val.Content
			}
			for _, m := range merged {
				if m = Resolve(m); m.Kind == yaml.MappingNode {
					if err := checkKeys(m, known, key, where, depth+1); err != nil {
						return err
					}
				}
			}
			continue
		}
		if !known[k.Value] {
			return fmt.Errorf("%s: %s.%s: unknown field", where(k.Line), key, k.Value)
		}
	}
	return nil
}
