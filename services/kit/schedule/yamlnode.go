package schedule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// position is where a field's value sits in its file.
type position struct{ line, col int }

// decoder walks a yaml.Node tree, collecting every problem instead of
// stopping at the first, and remembering where each field was.
type decoder struct {
	file   string
	probs  Problems
	pos    map[string]position
	anchor time.Time // origin of rate() expressions
}

func newDecoder(file string) *decoder {
	return &decoder{file: file, pos: map[string]position{}}
}

func (d *decoder) addf(n *yaml.Node, field, format string, args ...any) {
	p := Problem{File: d.file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		p.Line, p.Col = n.Line, n.Column
	}
	d.probs = append(d.probs, p)
}

// addAt reports a problem at a field already decoded.
func (d *decoder) addAt(field, format string, args ...any) {
	d.probs = append(d.probs, problemAt(d.file, d.pos, field, format, args...))
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseDocument parses data, which must hold exactly one YAML document, and
// returns its root node, or nil and the problems.
func parseDocument(file string, data []byte) (*yaml.Node, Problems) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	syntax := func(err error) Problems {
		p := Problem{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.Msg = m[2]
		}
		return Problems{p}
	}
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{File: file, Msg: "file is empty"}}
		}
		return nil, syntax(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntax(err)
	default:
		return nil, Problems{{File: file, Line: next.Line, Col: next.Column, Msg: "a file holds exactly one YAML document; found a second one"}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, Problems{{File: file, Msg: "file is empty"}}
		}
		root = root.Content[0]
	}
	return root, nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names the YAML type of n for "got ..." messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		case "!!timestamp":
			return "a timestamp"
		}
	}
	return "a " + strings.TrimPrefix(n.Tag, "!!")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// fields holds the recognised keys of a mapping.
type fields struct {
	node   *yaml.Node // the mapping, for "required" problems
	path   string
	values map[string]*yaml.Node
}

// get returns the value of key, or nil when it is absent or null.
func (f *fields) get(key string) *yaml.Node {
	if f == nil {
		return nil
	}
	return f.values[key]
}

// mapping checks that n is a mapping with only the known keys and returns
// them. A key whose value is null counts as absent. It returns nil (after
// reporting) when n is not a mapping.
func (d *decoder) mapping(n *yaml.Node, path string, known ...string) *fields {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.addf(n, path, "must be a mapping, got %s", describe(n))
		return nil
	}
	d.pos[path] = position{n.Line, n.Column}
	f := &fields{node: n, path: path, values: map[string]*yaml.Node{}}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.addf(k, path, "keys must be strings, got %s", describe(k))
			continue
		}
		key := k.Value
		if seen[key] {
			d.addf(k, join(path, key), "duplicate field")
			continue
		}
		seen[key] = true
		if !containsStr(known, key) {
			msg := "unknown field"
			if s := suggest(key, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.addf(k, join(path, key), "%s", msg)
			continue
		}
		if isNull(v) {
			continue
		}
		d.pos[join(path, key)] = position{v.Line, v.Column}
		f.values[key] = v
	}
	return f
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// suggest returns the known key that differs from key only in case or in
// its separators (time_zone, TimeZone for timezone), if any.
func suggest(key string, known []string) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
	}
	for _, k := range known {
		if norm(k) == norm(key) {
			return k
		}
	}
	return ""
}

// required reports a missing key and returns its value otherwise.
func (d *decoder) required(f *fields, key, why string) *yaml.Node {
	if f == nil {
		return nil
	}
	v := f.get(key)
	if v == nil {
		msg := "required"
		if why != "" {
			msg += " " + why
		}
		d.addf(f.node, join(f.path, key), "%s", msg)
	}
	return v
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if n == nil {
		return "", false
	}
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(" (quote it: %q)", n.Value)
		}
		d.addf(n, path, "must be a string, got %s%s", describe(n), hint)
		return "", false
	}
	return n.Value, true
}

// nonEmpty is str that also rejects "".
func (d *decoder) nonEmpty(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if ok && strings.TrimSpace(s) == "" {
		d.addf(n, path, "must not be empty")
		return "", false
	}
	return s, ok
}

func (d *decoder) integer(n *yaml.Node, path string, lo, hi int) (int, bool) {
	if n == nil {
		return 0, false
	}
	n = resolve(n)
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		d.addf(n, path, "must be an integer, got %s", describe(n))
		return 0, false
	}
	if v < int64(lo) || v > int64(hi) {
		if hi == math.MaxInt32 {
			d.addf(n, path, "%d must be at least %d", v, lo)
		} else {
			d.addf(n, path, "%d out of range %d-%d", v, lo, hi)
		}
		return 0, false
	}
	return int(v), true
}

func (d *decoder) boolean(n *yaml.Node, path string) (bool, bool) {
	if n == nil {
		return false, false
	}
	n = resolve(n)
	var v bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&v) != nil {
		d.addf(n, path, "must be true or false, got %s", describe(n))
		return false, false
	}
	return v, true
}

// duration parses a positive Go duration such as "5m" or "26h".
func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	if n == nil {
		return 0, false
	}
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.addf(n, path, "must be a duration such as \"5m\" or \"26h\", got %s", describe(n))
		return 0, false
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.addf(n, path, "%q is not a duration such as \"5m\" or \"26h\"", n.Value)
		return 0, false
	}
	if v <= 0 {
		d.addf(n, path, "%q must be positive", n.Value)
		return 0, false
	}
	return v, true
}

// enum parses a string that must be one of allowed.
func (d *decoder) enum(n *yaml.Node, path string, allowed ...string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if !containsStr(allowed, s) {
		d.addf(n, path, "%q is not one of %s", s, strings.Join(allowed, ", "))
		return "", false
	}
	return s, true
}

func (d *decoder) sequence(n *yaml.Node, path string) []*yaml.Node {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.addf(n, path, "must be a list, got %s", describe(n))
		return nil
	}
	return n.Content
}

// strList parses a list of strings; an empty list is returned as nil.
func (d *decoder) strList(n *yaml.Node, path string) ([]string, bool) {
	if n == nil {
		return nil, false
	}
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.addf(n, path, "must be a list of strings, got %s", describe(n))
		return nil, false
	}
	var out []string
	ok := true
	for i, item := range n.Content {
		s, good := d.str(item, fmt.Sprintf("%s[%d]", path, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

// strMap parses a mapping of strings to strings, checking each key with
// checkKey (which returns a message, or "" when the key is fine). When
// emptyMsg is set, empty values are reported with it.
func (d *decoder) strMap(n *yaml.Node, path string, checkKey func(string) string, emptyMsg string) (map[string]string, bool) {
	if n == nil {
		return nil, false
	}
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.addf(n, path, "must be a mapping of strings, got %s", describe(n))
		return nil, false
	}
	out := map[string]string{}
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.addf(k, path, "keys must be strings, got %s", describe(k))
			ok = false
			continue
		}
		p := join(path, k.Value)
		if _, dup := out[k.Value]; dup {
			d.addf(k, p, "duplicate key")
			ok = false
			continue
		}
		if msg := checkKey(k.Value); msg != "" {
			d.addf(k, p, "%s", msg)
			ok = false
		}
		s, good := d.str(v, p)
		if good && emptyMsg != "" && strings.TrimSpace(s) == "" {
			d.addf(v, p, "%s", emptyMsg)
			good = false
		}
		ok = ok && good
		out[k.Value] = s
	}
	return out, ok
}

var nameRE = regexp.MustCompile(NamePattern)

// NamePattern is the rule for schedule, cluster profile and container
// names (ARCHITECTURE.md §3): safe as NATS subject tokens and metric name
// segments.
const NamePattern = `^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$`

// checkName returns what is wrong with a name, or "".
func checkName(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > 64:
		return fmt.Sprintf("%q is %d characters long, at most 64 are allowed", s, len(s))
	case !nameRE.MatchString(s):
		return fmt.Sprintf("%q must start with a letter or digit and contain only letters, digits, '_' and '-'", s)
	}
	return ""
}

func (d *decoder) name(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	if msg := checkName(s); msg != "" {
		d.addf(n, path, "%s", msg)
		return "", false
	}
	return s, true
}

// at returns a problem positioned at a field remembered by the decoder.
func problemAt(file string, pos map[string]position, field, format string, args ...any) Problem {
	p := Problem{File: file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if at, ok := pos[field]; ok {
		p.Line, p.Col = at.line, at.col
	}
	return p
}
