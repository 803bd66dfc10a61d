// Package record is an input record as the inputs hand it to the
// pipeline: an ordered list of fields. String values (the common case:
// log, source, container_name, ecs_*) are held unboxed, so decoding a
// FireLens record costs one allocation per string and one for the list,
// not a map and an interface per field.
package record

import "encoding/json"

// Field is one key and its value: Str when IsStr, else Val (nil, bool,
// int64, uint64, float64, []any, map[string]any).
type Field struct {
	Key   string
	Str   string
	Val   any
	IsStr bool
}

// Record is a record's fields in wire order.
type Record []Field

// Get returns the field named k (the last one when repeated, as a map would).
func (r Record) Get(k string) (Field, bool) {
	for i := len(r) - 1; i >= 0; i-- {
		if r[i].Key == k {
			return r[i], true
		}
	}
	return Field{}, false
}

// String returns the value of k as a string: strings as they are, other
// values as JSON, "" when absent or null.
func (r Record) String(k string) string {
	f, ok := r.Get(k)
	if !ok {
		return ""
	}
	return f.String()
}

// String returns the value as a string: a string as it is, other values
// as JSON, "" for null.
func (f Field) String() string {
	switch {
	case f.IsStr:
		return f.Str
	case f.Val == nil:
		return ""
	}
	b, _ := json.Marshal(f.Val)
	return string(b)
}

// Value returns the value of k as an interface (strings boxed).
func (f Field) Value() any {
	if f.IsStr {
		return f.Str
	}
	return f.Val
}

// Map is the record as a map (for JSON rendering of a whole record).
func (r Record) Map() map[string]any {
	m := make(map[string]any, len(r))
	for _, f := range r {
		m[f.Key] = f.Value()
	}
	return m
}

// FromMap builds a record from a decoded JSON object.
func FromMap(m map[string]any) Record {
	r := make(Record, 0, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			r = append(r, Field{Key: k, Str: s, IsStr: true})
		} else {
			r = append(r, Field{Key: k, Val: v})
		}
	}
	return r
}

// Of builds a record from key/value pairs (tests and tools).
func Of(kv map[string]any) Record { return FromMap(kv) }
