package pipeline

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"strconv"
)

// levelKeys are the top-level keys a level is read from, in order of
// preference.
var levelKeys = [...]string{"loglevel", "level", "severity"}

// maxDepth is encoding/json's nesting limit: deeper values are invalid
// there, so they are invalid here too.
const maxDepth = 10000

// strPlain marks the bytes a JSON string holds without an escape: anything
// from 0x20 up but the quote and the backslash. Like encoding/json.Valid,
// bytes of 0x80 and above are not checked for UTF-8 here (the pipeline has
// already made the line valid UTF-8).
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// isHex marks the hexadecimal digits of a \u escape.
var isHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdefABCDEF" {
		t[c] = true
	}
	return t
}()

// scanJSON reports whether b is exactly one valid JSON value — the same
// inputs encoding/json.Valid accepts, including its nesting limit — and,
// when that value is an object, returns the raw values of the top-level
// level keys. It is the hot path of every JSON line: one pass, no
// allocations (unless nested deeper than 256 levels).
func scanJSON(b []byte) (vals [len(levelKeys)][]byte, ok bool) {
	// kinds holds one bit per open container: 1 object, 0 array.
	var small [4]uint64
	kinds := small[:]
	depth := 0
	want, vStart := -1, 0 // a top-level level key's value being read
	i := skipWS(b, 0)

value:
	if i >= len(b) {
		return vals, false
	}
	switch c := b[i]; c {
	case '{', '[':
		if depth >= maxDepth {
			return vals, false
		}
		if depth/64 >= len(kinds) {
			kinds = append(kinds, make([]uint64, len(kinds))...)
		}
		if c == '{' {
			kinds[depth/64] |= 1 << (depth % 64)
		} else {
			kinds[depth/64] &^= 1 << (depth % 64)
		}
		depth++
		i = skipWS(b, i+1)
		if i < len(b) && (b[i] == '}' && c == '{' || b[i] == ']' && c == '[') {
			depth--
			i++
			goto end
		}
		if c == '{' {
			goto key
		}
		goto value
	case '"':
		if i, _ = scanString(b, i); i < 0 {
			return vals, false
		}
	case 't':
		if !bytes.HasPrefix(b[i:], []byte("true")) {
			return vals, false
		}
		i += 4
	case 'f':
		if !bytes.HasPrefix(b[i:], []byte("false")) {
			return vals, false
		}
		i += 5
	case 'n':
		if !bytes.HasPrefix(b[i:], []byte("null")) {
			return vals, false
		}
		i += 4
	default:
		if i = scanNumber(b, i); i < 0 {
			return vals, false
		}
	}

end: // a value ended at b[i]
	if depth == 1 && want >= 0 {
		vals[want] = b[vStart:i] // the last duplicate wins, as in encoding/json
		want = -1
	}
	i = skipWS(b, i)
	if depth == 0 {
		return vals, i == len(b)
	}
	if i >= len(b) {
		return vals, false
	}
	if kinds[(depth-1)/64]&(1<<((depth-1)%64)) != 0 { // in an object
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
			goto key
		case '}':
			depth--
			i++
			goto end
		}
		return vals, false
	}
	switch b[i] {
	case ',':
		i = skipWS(b, i+1)
		goto value
	case ']':
		depth--
		i++
		goto end
	}
	return vals, false

key: // at the key of an object member
	if i >= len(b) || b[i] != '"' {
		return vals, false
	}
	{
		kStart := i
		kEnd, esc := scanString(b, i)
		if kEnd < 0 {
			return vals, false
		}
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return vals, false
		}
		i = skipWS(b, i+1)
		if depth == 1 {
			want, vStart = levelKey(b[kStart:kEnd], esc), i
		}
	}
	goto value
}

// levelKey returns the index in levelKeys of the quoted key q, or -1.
func levelKey(q []byte, esc bool) int {
	key := q[1 : len(q)-1]
	if esc { // escaped key: decode it (rare)
		var k string
		if json.Unmarshal(q, &k) != nil {
			return -1
		}
		key = []byte(k)
	}
	switch len(key) {
	case len("level"), len("loglevel"): // severity has the length of loglevel
	default:
		return -1
	}
	for k, name := range levelKeys {
		if string(key) == name {
			return k
		}
	}
	return -1
}

// scanString returns the index after the valid string starting at
// b[i] == '"' and whether it holds escapes; -1 when it is not valid.
func scanString(b []byte, i int) (int, bool) {
	esc := false
	for i++; i < len(b); {
		// Runs of plain bytes are the common case: skip them eight at a
		// time, then byte by byte.
		for i+8 <= len(b) {
			if m := stringStops(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		for i < len(b) && strPlain[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		switch b[i] {
		case '"':
			return i + 1, esc
		case '\\':
			esc = true
			if i+1 >= len(b) {
				return -1, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex[b[i+2]] || !isHex[b[i+3]] || !isHex[b[i+4]] || !isHex[b[i+5]] {
					return -1, false
				}
				i += 6
			default:
				return -1, false
			}
		default: // a control character
			return -1, false
		}
	}
	return -1, false
}

// SWAR (SIMD within a register) on eight bytes read little-endian: the
// lowest set bit of each result is exact (higher ones may be false
// positives after a true one, which the callers never look at).
const (
	swarOnes = 0x0101010101010101
	swarHigh = 0x8080808080808080
)

// stringStops marks the bytes of w that end a run of plain string bytes:
// a quote, a backslash or a control character (below 0x20). Bytes of 0x80
// and above are plain.
func stringStops(w uint64) uint64 {
	q := w ^ (swarOnes * '"')
	bs := w ^ (swarOnes * '\\')
	return ((q-swarOnes)&^q | (bs-swarOnes)&^bs | (w-swarOnes*0x20)&^w) & swarHigh
}

// scanNumber returns the index after the valid number starting at b[i]
// (-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?), or -1.
func scanNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// levelFromRaw reads a level from a raw JSON value: a string name or a
// bunyan/pino number.
func levelFromRaw(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	if raw[0] == '"' {
		s := raw[1 : len(raw)-1]
		for _, c := range s {
			if c == '\\' {
				var u string
				if json.Unmarshal(raw, &u) != nil {
					return ""
				}
				return NormalizeLevel(u)
			}
		}
		return NormalizeLevel(string(s))
	}
	if f, err := strconv.ParseFloat(string(raw), 64); err == nil {
		return numericLevel(int64(f))
	}
	return ""
}
