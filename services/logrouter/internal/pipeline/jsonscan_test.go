package pipeline

import (
	"encoding/json"
	"testing"
)

// FuzzScanLevel: on any valid JSON object, the allocation-free scan finds
// the same level as decoding the object with encoding/json.
func FuzzScanLevel(f *testing.F) {
	for _, s := range []string{
		`{"level":"warn"}`, `{"a":{"level":"x"},"severity":"ERROR"}`, `{"loglevel":50,"level":"info"}`,
		`{"level":"debug","level":"error"}`, `{"lev\u0065l":"fatal"}`, `{"x":["}",{"level":1}],"level":"w\"x"}`,
		` { "level" : "info" , "n" : [ 1 , 2 ] } `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m map[string]json.RawMessage
		if !json.Valid(b) || json.Unmarshal(b, &m) != nil {
			return
		}
		got := scanLevel(b)
		for i, k := range levelKeys {
			want := ""
			if raw, ok := m[k]; ok {
				want = levelFromRaw(raw)
			}
			if l := levelFromRaw(got[i]); l != want {
				t.Fatalf("key %s: scan %q (%q), decode %q", k, l, got[i], want)
			}
		}
	})
}
