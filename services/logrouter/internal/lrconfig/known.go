package lrconfig

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// UnknownField is a mapping key that no struct field takes.
type UnknownField struct {
	Line int
	Path string
}

func (e *UnknownField) Error() string {
	return fmt.Sprintf("line %d: %s: unknown field", e.Line, e.Path)
}

// checkKnown walks n against the type of out and returns the first key
// that does not name a field (yaml.v3 Node.Decode has no strict mode).
func checkKnown(n *yaml.Node, out any) error {
	return walkKnown(n, reflect.TypeOf(out), "")
}

func walkKnown(n *yaml.Node, t reflect.Type, p string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.MappingNode:
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				return &UnknownField{Line: k.Line, Path: join(p, k.Value)}
			}
			if err := walkKnown(n.Content[i+1], ft, join(p, k.Value)); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return nil
		}
		for i, c := range n.Content {
			if err := walkKnown(c, t.Elem(), fmt.Sprintf("%s[%d]", p, i)); err != nil {
				return err
			}
		}
	}
	return nil
}
