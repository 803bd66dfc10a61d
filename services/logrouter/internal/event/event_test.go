package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// FuzzAppendJSONString: the output is always valid JSON and decodes to the
// input with invalid UTF-8 replaced.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "ctl\x00\x1f\n\t", "\xff\xfe", "é\u2028x", "\u2029",
		`{"level":"info","msg":"a \"quoted\" word","path":"C:\\tmp"} tail`, "0123456789abcdef\"0123456789\\abcdef\x01xyz", "ascii then é then \"more\" then \xff"} {
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
		if ref := refAppendJSONString([]byte("prefix"), s); !bytes.Equal(AppendJSONString([]byte("prefix"), s), ref) {
			t.Fatalf("%q: got %s, earlier implementation %s", s, b, ref)
		}
	})
}

func TestBinaryRoundTrip(t *testing.T) {
	t.Parallel()
	base := Event{Time: time.Unix(1700000000, 123456789).UTC(), Tag: "ecs.app", Cluster: "prod", Service: "etl", Container: "web", Task: "t1", Source: "stdout", Level: "info", RunID: "r1"}
	for _, tc := range []struct {
		name    string
		log     string
		attrs   string
		version byte
	}{
		{"json line: attrs are the line", `{"level":"info","n":1}`, `{"level":"info","n":1}`, versionInLog},
		{"json line with surrounding space", " \t{\"a\":\"\\u00e9\"}  ", `{"a":"\u00e9"}`, versionInLog},
		{"compacted attrs stored apart", "{\n \"a\": 1\n}", `{"a":1}`, version},
		{"plain line", "hello world", "", version},
		{"empty line", "", "", version},
		{"attrs elsewhere in the line", `x {"a":1} {"a":1}`, `{"a":1}`, versionInLog},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base
			e.Log = tc.log
			if tc.attrs != "" {
				e.Attrs = []byte(tc.attrs)
				e.Flags = FlagJSON
			}
			b := e.AppendBinary(nil)
			require.Equal(t, tc.version, b[0])
			for _, shared := range []bool{false, true} {
				var got Event
				if shared {
					require.NoError(t, got.UnmarshalShared(bytes.Clone(b)))
				} else {
					require.NoError(t, got.Unmarshal(b))
				}
				require.Equal(t, e, got)
				require.Equal(t, e.AppendLine(nil, FormatJSON), got.AppendLine(nil, FormatJSON))
			}
			// Any cut is corrupt, never a panic.
			for i := 0; i < len(b); i++ {
				var got Event
				require.ErrorIs(t, got.Unmarshal(b[:i]), ErrCorrupt)
			}
		})
	}
}

// TestUnmarshalVersion1: records spooled before version 2 existed (Attrs
// always stored apart) still decode.
func TestUnmarshalVersion1(t *testing.T) {
	t.Parallel()
	b := []byte{1, FlagJSON}
	b = binary.AppendVarint(b, 1700000000123456789)
	for _, s := range []string{"tag", "c", "s", "ctr", "task", "src", "warn", "", `{"level":"warn"}`, `{"level":"warn"}`} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	var e Event
	require.NoError(t, e.Unmarshal(b))
	require.Equal(t, Event{Time: time.Unix(0, 1700000000123456789).UTC(), Tag: "tag", Cluster: "c", Service: "s", Container: "ctr", Task: "task", Source: "src",
		Level: "warn", Log: `{"level":"warn"}`, Attrs: []byte(`{"level":"warn"}`), Flags: FlagJSON}, e)
}

// FuzzUnmarshal: any bytes decode or fail with ErrCorrupt; what decodes
// encodes back to something that decodes to the same event.
func FuzzUnmarshal(f *testing.F) {
	e := Event{Time: time.Unix(1, 2), Tag: "t", Log: ` {"a":1}`, Attrs: []byte(`{"a":1}`), Flags: FlagJSON}
	f.Add(e.AppendBinary(nil))
	e.Attrs = []byte(`{"b":2}`)
	f.Add(e.AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if err := e.Unmarshal(b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatal(err)
			}
			return
		}
		var back Event
		if err := back.Unmarshal(e.AppendBinary(nil)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.AppendLine(nil, FormatJSON), back.AppendLine(nil, FormatJSON)) {
			t.Fatalf("%q: re-encoding changed the event", b)
		}
	})
}

// refAppendJSONString is the earlier implementation (plain runs skipped,
// every other byte appended): the fuzz target holds AppendJSONString to
// its exact bytes.
func refAppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && plain[s[i]] {
			i++
		}
		if i >= len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, `\u202`...)
			b = append(b, hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func BenchmarkAppendJSONString(b *testing.B) {
	line := `{"level":"info","ts":"2026-11-21T19:01:27.123456789Z","msg":"processed batch","job":"nightly-report","batch":12345,"rows":1313,"duration_ms":17,"user":"svc-reporting","request_id":"9e3779b97f4a7c15"}`
	buf := make([]byte, 0, 1024)
	b.SetBytes(int64(len(line)))
	b.Run("now", func(b *testing.B) {
		for b.Loop() {
			buf = AppendJSONString(buf[:0], line)
		}
	})
	b.Run("earlier", func(b *testing.B) {
		for b.Loop() {
			buf = refAppendJSONString(buf[:0], line)
		}
	})
}

// refAppendLine is the earlier rendering (everything formatted per event):
// the Renderer must give the same bytes.
func refAppendLine(e *Event, b []byte) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = appendField(b, "cluster", e.Cluster)
	b = appendField(b, "service", e.Service)
	b = appendField(b, "container", e.Container)
	b = appendField(b, "task", e.Task)
	b = appendField(b, "source", e.Source)
	b = appendField(b, "level", e.Level)
	if e.RunID != "" {
		b = appendField(b, "run_id", e.RunID)
	}
	if e.Tag != "" {
		b = appendField(b, "tag", e.Tag)
	}
	b = appendField(b, "log", e.Log)
	if e.Flags&FlagTruncated != 0 {
		b = append(b, `,"truncated":true`...)
	}
	if len(e.Attrs) > 0 {
		b = append(b, `,"attributes":`...)
		b = append(b, e.Attrs...)
	}
	return append(b, '}', '\n')
}

// TestRenderer: a Renderer used for a long run of events — tags that
// repeat and change, times within and across seconds, nanoseconds with and
// without trailing zeros, years at and beyond four digits, other
// locations — renders every event exactly as the per-event formatting did.
func TestRenderer(t *testing.T) {
	t.Parallel()
	cet := time.FixedZone("CET", 3600)
	times := []time.Time{
		time.Date(2026, 11, 21, 19, 1, 27, 123456789, time.UTC),
		time.Date(2026, 11, 21, 19, 1, 27, 123456000, time.UTC),
		time.Date(2026, 11, 21, 19, 1, 27, 0, time.UTC),
		time.Date(2026, 11, 21, 19, 1, 28, 100, time.UTC),
		time.Date(2026, 11, 21, 20, 1, 28, 500000000, cet),
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 10, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 10, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(0, 0),
	}
	var r Renderer
	var got, want []byte
	for i := 0; i < 400; i++ {
		e := Event{
			Time: times[i/3%len(times)], Cluster: []string{"prod", "dev"}[i/50%2], Service: "etl", Container: "web", Task: "t1",
			Source: "stdout", Level: []string{"info", "info", "error"}[i/7%3], Log: fmt.Sprintf(`{"level":"info","n":%d,"q":"a\"b"}`, i),
		}
		if i%11 == 0 {
			e.RunID = "run-1"
		}
		if i%13 < 6 {
			e.Tag = "ecs.app"
		}
		if i%4 == 0 {
			e.Attrs = []byte(e.Log)
			e.Flags = FlagJSON
		}
		if i%17 == 0 {
			e.Flags |= FlagTruncated
		}
		got = r.AppendLine(got[:0], &e, FormatJSON)
		want = refAppendLine(&e, want[:0])
		require.Equal(t, string(want), string(got), "event %d", i)
		require.Equal(t, string(want), string(e.AppendLine(nil, FormatJSON)), "event %d", i)
		require.Equal(t, e.Log+"\n", string(r.AppendLine(nil, &e, FormatRaw)))
	}
}

func BenchmarkRenderer(b *testing.B) {
	e := Event{Time: time.Date(2026, 11, 21, 19, 1, 27, 123456789, time.UTC), Tag: "ecs.app", Cluster: "prod", Service: "nightly-report", Container: "app",
		Task: "0f1e2d3c4b5a69788796a5b4c3d2e1f0", Source: "stdout", Level: "info",
		Log: `{"level":"info","ts":"2026-11-21T19:01:27.123456789Z","msg":"processed batch","job":"nightly-report","batch":12345,"rows":1313,"duration_ms":17,"user":"svc-reporting","request_id":"9e3779b97f4a7c15"}`}
	e.Attrs, e.Flags = []byte(e.Log), FlagJSON
	buf := make([]byte, 0, 4096)
	b.Run("renderer", func(b *testing.B) {
		var r Renderer
		for b.Loop() {
			buf = r.AppendLine(buf[:0], &e, FormatJSON)
		}
	})
	b.Run("per-event", func(b *testing.B) {
		for b.Loop() {
			buf = refAppendLine(&e, buf[:0])
		}
	})
}

// TestRendererCopiesTags: the renderer compares an event's tags with a
// copy of its own, so memory reused between calls (the output runner
// reads every batch into the same buffer) that now holds the next event's
// tags cannot pass for the tags it rendered.
func TestRendererCopiesTags(t *testing.T) {
	t.Parallel()
	mem := []byte("alpha")
	tm := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	e := Event{Time: tm, Cluster: unsafe.String(&mem[0], len(mem)), Service: "s", Level: "info", Log: "one"}
	var r Renderer
	require.Contains(t, string(r.AppendLine(nil, &e, FormatJSON)), `"cluster":"alpha"`)
	copy(mem, "omega") // the buffer is reused: the old event's cluster now reads "omega"
	e2 := Event{Time: tm, Cluster: "omega", Service: "s", Level: "info", Log: "two"}
	require.Contains(t, string(r.AppendLine(nil, &e2, FormatJSON)), `"cluster":"omega"`)
}
