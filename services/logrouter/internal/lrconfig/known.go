package lrconfig

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldError is a problem found while walking the node tree: a key no
// struct field takes, or a size or duration that does not parse.
type FieldError struct {
	Line int
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return fmt.Sprintf("line %d: %s: %s", e.Line, e.Path, e.Msg) }

var (
	sizeType     = reflect.TypeOf(Size(0))
	durationType = reflect.TypeOf(Duration(0))
)

// checkKnown walks n against the type of out and returns the first key
// that does not name a field (yaml.v3 Node.Decode has no strict mode).
func checkKnown(n *yaml.Node, out any) error {
	return walkKnown(n, reflect.TypeOf(out), "")
}

func walkKnown(n *yaml.Node, t reflect.Type, p string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode {
		var err error
		switch t {
		case sizeType:
			_, err = ParseSize(n.Value)
		case durationType:
			var d Duration
			err = d.UnmarshalYAML(n)
		default:
			// Plain scalars: yaml's own type errors name only the line.
			switch t.Kind() {
			case reflect.Bool:
				if n.Decode(reflect.New(t).Interface()) != nil {
					err = fmt.Errorf("%q is not true or false", n.Value)
				}
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				if n.Decode(reflect.New(t).Interface()) != nil {
					err = fmt.Errorf("%q is not a whole number", n.Value)
				}
			}
		}
		if err != nil {
			return &FieldError{Line: n.Line, Path: p, Msg: err.Error()}
		}
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
				return &FieldError{Line: k.Line, Path: join(p, k.Value), Msg: "unknown field"}
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
