package pipeline

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzScanLevel: scanJSON accepts exactly what encoding/json.Valid
// accepts, and on any valid JSON object it finds the same level values as
// decoding the object with encoding/json and as the earlier two-pass scan
// (json.Valid, then a walk of the top level).
func FuzzScanLevel(f *testing.F) {
	for _, s := range scanCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := scanJSON(b)
		if ok != json.Valid(b) {
			t.Fatalf("%q: scanJSON ok=%v, json.Valid=%v", b, ok, !ok)
		}
		var m map[string]json.RawMessage
		if !ok || json.Unmarshal(b, &m) != nil {
			return
		}
		ref := refScanLevel(b)
		for i, k := range levelKeys {
			if !bytes.Equal(got[i], ref[i]) {
				t.Fatalf("%q key %s: scanJSON %q, two-pass scan %q", b, k, got[i], ref[i])
			}
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

var scanCases = []string{
	`{"level":"warn"}`, `{"a":{"level":"x"},"severity":"ERROR"}`, `{"loglevel":50,"level":"info"}`,
	`{"level":"debug","level":"error"}`, `{"lev\u0065l":"fatal"}`, `{"x":["}",{"level":1}],"level":"w\"x"}`,
	` { "level" : "info" , "n" : [ 1 , 2 ] } `, `{"level":{"a":[1,{}]},"severity":[]}`,
	`{"level":"\u00e9\ud83d\ude00","n":-0.5e+10,"big":123456789012345678901234567890}`,
	`{"a":"\/\b\f\n\r\t\\"}`, `{"a":"é😀"}`, `{"level":1E400}`,
	// Invalid ones.
	``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`,
	`{"a":-}`, `{"a":tru}`, `{"a":nul}`, `{"a":truex}`, `{"a":"\x"}`, `{"a":"\u12g4"}`, "{\"a\":\"\x01\"}",
	`{"a":"unterminated}`, `{"a":1}{}`, `{"a":1} x`, `{'a':1}`, `{"a":[}`, `{"a":{]}`, `[1}`, `{"a" 1}`,
	// Other top-level values.
	`[]`, `"s"`, `0`, `-1.5e3`, `true`, `null`, ` [ {"level":"x"} ] `,
}

func TestScanJSON(t *testing.T) {
	t.Parallel()
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	cases := append([]string{}, scanCases...)
	// encoding/json's nesting limit is 10,000.
	cases = append(cases, deep(300), deep(10000), deep(10001), `{"a":`+deep(9999)+`}`, `{"a":`+deep(10000)+`}`)
	for _, s := range cases {
		got, ok := scanJSON([]byte(s))
		require.Equal(t, json.Valid([]byte(s)), ok, "%.80q", s)
		if !ok {
			continue
		}
		ref := refScanLevel([]byte(s))
		for i := range levelKeys {
			require.Equal(t, string(ref[i]), string(got[i]), "%.80q", s)
		}
	}
	vals, ok := scanJSON([]byte(`{"level":"debug","x":{"level":"error"},"level":"warn","severity":7}`))
	require.True(t, ok)
	require.Equal(t, `"warn"`, string(vals[1]))
	require.Equal(t, `7`, string(vals[2]))
	require.Nil(t, vals[0])
}

func TestScanJSONAllocs(t *testing.T) {
	line := []byte(`{"level":"info","ts":"2026-11-21T19:01:27.123456789Z","msg":"processed batch","job":"nightly-report","batch":1,"rows":13,"duration_ms":1.5e2,"ok":true,"x":null,"nested":{"a":[1,2,{"b":"c"}]}}`)
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := scanJSON(line); !ok {
			t.Fatal("invalid")
		}
	})
	require.Zero(t, allocs)
}

// refScanLevel is the earlier level scan (run after json.Valid): it walks
// the top level of obj, a valid JSON object, and returns the raw values of
// the level keys. The differential tests hold scanJSON to it.
func refScanLevel(obj []byte) (vals [len(levelKeys)][]byte) {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	i++
	for {
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return
		}
		kStart, kEnd := i, refSkipString(obj, i)
		key := obj[kStart+1 : kEnd-1]
		i = skipWS(obj, kEnd)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipWS(obj, i+1)
		vEnd := refSkipValue(obj, i)
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			if json.Unmarshal(obj[kStart:kEnd], &k) == nil {
				key = []byte(k)
			}
		}
		for k, name := range levelKeys {
			if string(key) == name {
				vals[k] = obj[i:vEnd]
			}
		}
		i = skipWS(obj, vEnd)
		if i >= len(obj) || obj[i] != ',' {
			return
		}
		i++
	}
}

func refSkipString(b []byte, i int) int {
	for i++; i < len(b); {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b)
		}
		i += q
		bs := 0
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			bs++
		}
		i++
		if bs%2 == 0 {
			return i
		}
	}
	return len(b)
}

func refSkipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return refSkipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = refSkipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default:
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\n' && b[i] != '\t' && b[i] != '\r' {
			i++
		}
		return i
	}
}

func BenchmarkScanJSON(b *testing.B) {
	line := []byte(`{"level":"info","ts":"2026-11-21T19:01:27.123456789Z","msg":"processed batch","job":"nightly-report","batch":12345,"rows":1313,"duration_ms":17,"user":"svc-reporting","request_id":"9e3779b97f4a7c15"}`)
	b.SetBytes(int64(len(line)))
	b.Run("one-pass", func(b *testing.B) {
		for b.Loop() {
			scanJSON(line)
		}
	})
	b.Run("valid+scan", func(b *testing.B) {
		for b.Loop() {
			_ = json.Valid(line)
			refScanLevel(line)
		}
	})
}

// TestScanStringStops: a quote, backslash or control byte at every
// offset of a string (the eight-byte skip must stop exactly there), among
// plain ASCII and bytes of 0x80 and above, is judged as encoding/json
// judges it.
func TestScanStringStops(t *testing.T) {
	t.Parallel()
	fillers := []string{"abcdefghijklmnopqrstuvwxyz0123456789", "é€ñøåß漢字ü", "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}"}
	stops := []string{`"`, `\`, `\\`, `\"`, `\u00e9`, `\x`, "\x00", "\x1f", "\n", "\t", "\x7f", "\xc3\xa9"}
	for _, fill := range fillers {
		for _, stop := range stops {
			for at := 0; at <= 20; at++ {
				for tail := 0; tail <= 9; tail++ {
					s := `{"k":"` + cut(fill, at) + stop + cut(fill, tail) + `","level":"warn"}`
					vals, ok := scanJSON([]byte(s))
					require.Equal(t, json.Valid([]byte(s)), ok, "%q", s)
					if ok {
						require.Equal(t, `"warn"`, string(vals[1]), "%q", s)
					}
				}
			}
		}
	}
}

// cut returns the first n bytes of s, repeated as needed.
func cut(s string, n int) string {
	for len(s) < n {
		s += s
	}
	return s[:n]
}
