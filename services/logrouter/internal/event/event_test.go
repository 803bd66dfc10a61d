package event

import (
	"encoding/json"
	"testing"
)

// FuzzAppendJSONString: the output is always valid JSON and decodes to the
// input with invalid UTF-8 replaced.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "ctl\x00\x1f\n\t", "\xff\xfe", "é\u2028x", "\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := AppendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var w string
		_ = json.Unmarshal(want, &w)
		if got != w {
			t.Fatalf("%q: got %q want %q", s, got, w)
		}
	})
}
