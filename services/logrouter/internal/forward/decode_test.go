package forward

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 123456789, time.UTC)

func entries(n int, form fwtest.TimeForm) [][]byte {
	var out [][]byte
	for i := 0; i < n; i++ {
		out = append(out, fwtest.Entry(t0.Add(time.Duration(i)*time.Second), map[string]any{"log": fmt.Sprintf("line %d", i), "n": i}, form))
	}
	return out
}

func TestDecodeModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		frame    []byte
		mode     Mode
		n        int
		subSec   bool
		chunk    string
		metadata bool
	}{
		{"message eventtime", fwtest.Message("app", t0, map[string]any{"log": "line 0"}, "c1"), ModeMessage, 1, true, "c1", false},
		{"forward int time", fwtest.Forward("app", entries(3, fwtest.IntTime), "c2"), ModeForward, 3, false, "c2", false},
		{"forward ext8", fwtest.Forward("app", entries(3, fwtest.EventTimeExt8), ""), ModeForward, 3, true, "", false},
		{"packed bin", fwtest.PackedForward("app", entries(5, fwtest.EventTimeFix), "c3", true), ModePackedForward, 5, true, "c3", false},
		{"packed str", fwtest.PackedForward("app", entries(5, fwtest.IntTime), "c4", false), ModePackedForward, 5, false, "c4", false},
		{"packed fluent-bit v2 entries", fwtest.PackedForward("app", entries(4, fwtest.FluentBitV2), "c5", true), ModePackedForward, 4, true, "c5", true},
		{"compressed one member", fwtest.CompressedPackedForward("app", entries(6, fwtest.EventTimeFix), "c6", 1), ModeCompressedPacked, 6, true, "c6", false},
		{"compressed three members", fwtest.CompressedPackedForward("app", entries(7, fwtest.FluentBitV2), "c7", 3), ModeCompressedPacked, 7, true, "c7", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := objLen(tc.frame)
			require.NoError(t, err)
			require.Equal(t, len(tc.frame), n)
			_, err = objLen(tc.frame[:len(tc.frame)-1])
			require.ErrorIs(t, err, errShort)
			f, err := DecodeFrame(tc.frame, Limits{})
			require.NoError(t, err)
			require.Equal(t, "app", f.Tag)
			require.Equal(t, tc.mode, f.Mode)
			require.Equal(t, tc.chunk, f.Chunk)
			require.Len(t, f.Entries, tc.n)
			for i, e := range f.Entries {
				want := t0.Add(time.Duration(i) * time.Second)
				if !tc.subSec {
					want = want.Truncate(time.Second)
				}
				require.True(t, want.Equal(e.Time), "entry %d time %v want %v", i, e.Time, want)
				require.Equal(t, fmt.Sprintf("line %d", i), e.Record.String("log"))
				require.Equal(t, tc.metadata, e.Metadata != nil)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	good := fwtest.PackedForward("app", entries(2, fwtest.IntTime), "c", true)
	var badGzip []byte
	{
		b := fwtest.CompressedPackedForward("app", entries(2, fwtest.IntTime), "c", 1)
		// Corrupt the gzip stream inside (flip a byte of the deflate data).
		i := bytes.Index(b, []byte{0x1f, 0x8b})
		badGzip = append([]byte(nil), b...)
		badGzip[i+12] ^= 0xff
	}
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write(make([]byte, 2<<20))
	_ = zw.Close()
	bombFrame := append([]byte{0x93, 0xa3, 'a', 'p', 'p', 0xc6, 0, 0, 0, 0}, []byte{}...)
	bombFrame = append(bombFrame[:5], 0xc6, byte(bomb.Len()>>24), byte(bomb.Len()>>16), byte(bomb.Len()>>8), byte(bomb.Len()))
	bombFrame = append(bombFrame, bomb.Bytes()...)
	bombFrame = append(bombFrame, 0x81, 0xaa, 'c', 'o', 'm', 'p', 'r', 'e', 's', 's', 'e', 'd', 0xa4, 'g', 'z', 'i', 'p')

	for _, tc := range []struct {
		name   string
		frame  []byte
		reason string
	}{
		{"not an array", []byte{0xa3, 'a', 'b', 'c'}, "malformed"},
		{"array of 1", []byte{0x91, 0xa1, 'a'}, "malformed"},
		{"tag not a string", []byte{0x92, 0x01, 0x90}, "wrong_type"},
		{"tag invalid utf-8", []byte{0x92, 0xa2, 0xff, 0xfe, 0x90}, "invalid_utf8"},
		{"record key invalid utf-8", []byte{0x92, 0xa1, 'a', 0x91, 0x92, 0x01, 0x81, 0xa1, 0xff, 0x01}, "invalid_utf8"},
		{"second element a map", []byte{0x92, 0xa1, 'a', 0x80}, "wrong_type"},
		{"entry record not a map", append([]byte{0x92, 0xa1, 'a', 0x91, 0x92, 0x01}, 0x02), "wrong_type"},
		{"entry of 3", []byte{0x92, 0xa1, 'a', 0x91, 0x93, 0x01, 0x80, 0x80}, "malformed"},
		{"eventtime wrong ext type", []byte{0x93, 0xa1, 'a', 0xd7, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0x80}, "wrong_type"},
		{"eventtime nanos out of range", []byte{0x93, 0xa1, 'a', 0xd7, 0x00, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x80}, "wrong_type"},
		{"chunk not a string", []byte{0x94, 0xa1, 'a', 0x01, 0x80, 0x81, 0xa5, 'c', 'h', 'u', 'n', 'k', 0x05}, "wrong_type"},
		{"trailing bytes", append(append([]byte(nil), good...), 0xc0), "malformed"},
		{"bad gzip", badGzip, "bad_gzip"},
		{"gzip bomb", bombFrame, "oversize"},
		{"packed garbage", []byte{0x92, 0xa1, 'a', 0xc4, 0x02, 0xc1, 0xc1}, "wrong_type"},
		{"packed truncated entry", []byte{0x92, 0xa1, 'a', 0xc4, 0x02, 0x92, 0x01}, "malformed"},
		{"unknown compression", []byte{0x93, 0xa1, 'a', 0xc4, 0x00, 0x81, 0xaa, 'c', 'o', 'm', 'p', 'r', 'e', 's', 's', 'e', 'd', 0xa3, 'l', 'z', '4'}, "wrong_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeFrame(tc.frame, Limits{MaxDecompressed: 1 << 20})
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			require.Equal(t, tc.reason, pe.Reason, "%v", err)
		})
	}
}

// FuzzDecodeFrame: whatever the bytes, framing and decoding return an
// error or a frame, never panic, and never disagree about the length.
func FuzzDecodeFrame(f *testing.F) {
	seeds := [][]byte{
		fwtest.Message("app", t0, map[string]any{"log": "x"}, "c"),
		fwtest.Forward("app", entries(2, fwtest.IntTime), "c"),
		fwtest.PackedForward("app", entries(2, fwtest.FluentBitV2), "c", true),
		fwtest.CompressedPackedForward("app", entries(3, fwtest.EventTimeExt8), "c", 2),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	// Keep the seeds as files too, so `go test` replays them without -fuzz.
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		_ = os.MkdirAll(dir, 0o755)
		for i, s := range seeds {
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)), 0o644)
		}
	}
	// One Buffers for every input of this worker, as a server reuses them
	// frame after frame: decoding into it must give what a fresh decode
	// gives, whatever was decoded into it before.
	var bf Buffers
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := objLen(b)
		if err != nil {
			return
		}
		fr, err := DecodeFrame(b[:n], Limits{MaxDecompressed: 1 << 20})
		bf.Reset()
		fr2, err2 := DecodeFrameInto(b[:n], Limits{MaxDecompressed: 1 << 20}, &bf)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("DecodeFrame: %v; DecodeFrameInto reused buffers: %v", err, err2)
		}
		if err == nil && !sameFrame(fr, fr2) {
			t.Fatalf("DecodeFrameInto reused buffers differs:\n%+v\n%+v", fr, fr2)
		}
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("decode error is not a ProtocolError: %v", err)
			}
			return
		}
		if fr.Tag == "" && len(fr.Entries) > 0 && fr.Mode == "" {
			t.Fatal("frame without mode")
		}
	})
}

// TestDecodeOwnsStrings: the decoded strings do not alias the caller's
// buffer (the connection reuses it for the next frame) — in every mode,
// including keys that are not interned and nested values.
func TestDecodeOwnsStrings(t *testing.T) {
	t.Parallel()
	rec := map[string]any{"log": "the line", "custom_key": "custom value", "nested": map[string]any{"k": "v"}, "list": []any{"a", "b"}}
	ents := [][]byte{fwtest.Entry(t0, rec, fwtest.EventTimeFix), fwtest.Entry(t0, rec, fwtest.FluentBitV2)}
	for name, frame := range map[string][]byte{
		"message":    fwtest.Message("app", t0, rec, "chunk-1"),
		"forward":    fwtest.Forward("app", ents, "chunk-1"),
		"packed bin": fwtest.PackedForward("app", ents, "chunk-1", true),
		"packed str": fwtest.PackedForward("app", ents, "chunk-1", false),
		"compressed": fwtest.CompressedPackedForward("app", ents, "chunk-1", 2),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			buf := bytes.Clone(frame)
			f, err := DecodeFrame(buf, Limits{})
			require.NoError(t, err)
			for i := range buf {
				buf[i] = 'X'
			}
			require.Equal(t, "app", f.Tag)
			require.Equal(t, "chunk-1", f.Chunk)
			require.NotEmpty(t, f.Entries)
			for _, e := range f.Entries {
				require.Equal(t, "the line", e.Record.String("log"))
				require.Equal(t, "custom value", e.Record.String("custom_key"))
				require.Equal(t, map[string]any{"k": "v"}, e.Record.Map()["nested"])
				require.Equal(t, []any{"a", "b"}, e.Record.Map()["list"])
			}
		})
	}
}

// TestDecodeIntoReusedBuffers: frames decoded one after the other into
// the same Buffers (as the server does), growing and shrinking, each
// decode whole and right in every mode; Tag and Chunk of the frame before
// survive the next decode (they are copied apart from the buffers).
func TestDecodeIntoReusedBuffers(t *testing.T) {
	t.Parallel()
	var bf Buffers
	var prevTag, prevChunk, wantPrevTag, wantPrevChunk string
	for _, round := range []int{0, 2, 1, 0} {
		for _, mode := range []string{"message", "forward", "packed bin", "packed str", "compressed"} {
			line := fmt.Sprintf("line %d of %s %s", round, mode, strings.Repeat("x", round*3000))
			rec := map[string]any{"log": line, "custom_key": mode, "nested": map[string]any{"round": int64(round)}}
			var ents [][]byte
			for i := 0; i < 50*(round+1); i++ {
				ents = append(ents, fwtest.Entry(t0, rec, fwtest.EventTimeFix))
			}
			tag, chunk := "app."+mode, fmt.Sprintf("chunk-%d-%s", round, mode)
			var frame []byte
			switch mode {
			case "message":
				frame = fwtest.Message(tag, t0, rec, chunk)
			case "forward":
				frame = fwtest.Forward(tag, ents, chunk)
			case "packed bin":
				frame = fwtest.PackedForward(tag, ents, chunk, true)
			case "packed str":
				frame = fwtest.PackedForward(tag, ents, chunk, false)
			case "compressed":
				frame = fwtest.CompressedPackedForward(tag, ents, chunk, 2)
			}
			bf.Reset()
			f, err := DecodeFrameInto(bytes.Clone(frame), Limits{}, &bf)
			require.NoError(t, err, mode)
			require.Equal(t, wantPrevTag, prevTag)
			require.Equal(t, wantPrevChunk, prevChunk)
			require.Equal(t, tag, f.Tag)
			require.Equal(t, chunk, f.Chunk)
			want := len(ents)
			if mode == "message" {
				want = 1
			}
			require.Len(t, f.Entries, want, mode)
			for _, e := range f.Entries {
				require.Equal(t, line, e.Record.String("log"))
				require.Equal(t, mode, e.Record.String("custom_key"))
				require.Equal(t, map[string]any{"round": int64(round)}, e.Record.Map()["nested"])
			}
			prevTag, prevChunk, wantPrevTag, wantPrevChunk = f.Tag, f.Chunk, tag, chunk
		}
	}
}

// sameFrame compares decoded frames, an empty list or map equal to a nil one.
func sameFrame(a, b *Frame) bool {
	if a.Tag != b.Tag || a.Mode != b.Mode || a.Chunk != b.Chunk || a.Size != b.Size || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if !x.Time.Equal(y.Time) || len(x.Record) != len(y.Record) || len(x.Metadata) != len(y.Metadata) {
			return false
		}
		if len(x.Record) > 0 && !reflect.DeepEqual(x.Record, y.Record) {
			return false
		}
		if len(x.Metadata) > 0 && !reflect.DeepEqual(x.Metadata, y.Metadata) {
			return false
		}
	}
	return true
}
