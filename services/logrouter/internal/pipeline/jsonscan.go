package pipeline

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// levelKeys are the top-level keys a level is read from, in order of
// preference.
var levelKeys = [...]string{"loglevel", "level", "severity"}

// scanLevel walks the top level of obj, a valid JSON object (checked with
// json.Valid first), and returns the raw values of the level keys without
// decoding the rest: the hot path of every JSON line, so no allocations.
func scanLevel(obj []byte) (vals [len(levelKeys)][]byte) {
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
		kStart, kEnd := i, skipString(obj, i)
		key := obj[kStart+1 : kEnd-1]
		i = skipWS(obj, kEnd)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipWS(obj, i+1)
		vEnd := skipValue(obj, i)
		if bytes.IndexByte(key, '\\') >= 0 { // escaped key: decode it (rare)
			var k string
			if json.Unmarshal(obj[kStart:kEnd], &k) == nil {
				key = []byte(k)
			}
		}
		for k, name := range levelKeys {
			if string(key) == name { // the last duplicate wins, as in encoding/json
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

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
// It jumps from quote to quote (bytes.IndexByte is vectorized) and counts
// the backslashes before each to tell an escaped quote from the end.
func skipString(b []byte, i int) int {
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

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
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
