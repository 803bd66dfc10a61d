// Package event is the logrouter's record after the pipeline: the tags it
// was given, the original line, and its compact binary encoding in the
// spool. The same encoded bytes go to every output's spool.
package event

import (
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Flag bits of an Event.
const (
	// FlagTruncated marks a line cut to the record size limit.
	FlagTruncated uint8 = 1 << iota
	// FlagJSON marks a line that parsed as a JSON object; Attrs holds it.
	FlagJSON
)

// Event is one log record, tagged.
type Event struct {
	// Time is the event time given by the sender.
	Time time.Time
	// Tag is the Fluent tag it arrived with.
	Tag       string
	Cluster   string
	Service   string
	Container string
	Task      string
	Source    string
	// Level is normalized: debug, info, warn, error, fatal or unknown.
	Level string
	// RunID is the taskyard run id when the sender gave one.
	RunID string
	// Log is the original line (after redaction and truncation).
	Log string
	// Attrs is the line as a compact JSON object when it was one.
	Attrs []byte
	Flags uint8
}

// ErrCorrupt is returned by Unmarshal for bytes it did not produce.
var ErrCorrupt = errors.New("event: corrupt encoding")

// Encoding versions: in version 1 Attrs follows Log as its own bytes; in
// version 2 (written when Attrs is a part of Log, as it is for a JSON line
// that needed no compaction) Attrs is only its offset and length in Log,
// which spares a second copy of the line in the spool.
const (
	version      = 1
	versionInLog = 2
)

// AppendBinary appends the spool encoding of e to b.
func (e *Event) AppendBinary(b []byte) []byte {
	off, inLog := attrsInLog(e.Log, e.Attrs)
	if inLog {
		b = append(b, versionInLog, e.Flags)
	} else {
		b = append(b, version, e.Flags)
	}
	b = binary.AppendVarint(b, e.Time.UnixNano())
	for _, s := range [...]string{e.Tag, e.Cluster, e.Service, e.Container, e.Task, e.Source, e.Level, e.RunID, e.Log} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if inLog {
		b = binary.AppendUvarint(b, uint64(off))
		return binary.AppendUvarint(b, uint64(len(e.Attrs)))
	}
	b = binary.AppendUvarint(b, uint64(len(e.Attrs)))
	return append(b, e.Attrs...)
}

// attrsInLog finds attrs in log: the pipeline's attributes are the line
// without surrounding white space unless the line needed compacting.
func attrsInLog(log string, attrs []byte) (int, bool) {
	if len(attrs) == 0 {
		return 0, false
	}
	off := strings.IndexByte(log, attrs[0])
	if off < 0 || len(log)-off < len(attrs) || log[off:off+len(attrs)] != string(attrs) {
		return 0, false
	}
	return off, true
}

// Unmarshal decodes what AppendBinary wrote. Strings are copied.
func (e *Event) Unmarshal(b []byte) error { return e.unmarshal(b, false) }

// UnmarshalShared decodes like Unmarshal but the strings and Attrs point
// into b, which the caller must never modify afterwards (a fresh copy
// per batch: one allocation instead of one per field).
func (e *Event) UnmarshalShared(b []byte) error { return e.unmarshal(b, true) }

func (e *Event) unmarshal(b []byte, shared bool) error {
	if len(b) < 2 || (b[0] != version && b[0] != versionInLog) {
		return ErrCorrupt
	}
	inLog := b[0] == versionInLog
	e.Flags = b[1]
	b = b[2:]
	ns, n := binary.Varint(b)
	if n <= 0 {
		return ErrCorrupt
	}
	e.Time = time.Unix(0, ns).UTC()
	b = b[n:]
	next := func() ([]byte, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return nil, false
		}
		v := b[n : n+int(l)]
		b = b[n+int(l):]
		return v, true
	}
	var log []byte
	for i, p := range [...]*string{&e.Tag, &e.Cluster, &e.Service, &e.Container, &e.Task, &e.Source, &e.Level, &e.RunID, &e.Log} {
		v, ok := next()
		if !ok {
			return ErrCorrupt
		}
		if shared {
			*p = unsafe.String(unsafe.SliceData(v), len(v))
		} else {
			*p = string(v)
		}
		if i == 8 {
			log = v
		}
	}
	e.Attrs = nil
	if inLog {
		off, n := binary.Uvarint(b)
		if n <= 0 {
			return ErrCorrupt
		}
		l, m := binary.Uvarint(b[n:])
		if m <= 0 || len(b) != n+m || l == 0 || off > uint64(len(log)) || l > uint64(len(log))-off {
			return ErrCorrupt
		}
		v := log[off : off+l]
		if shared {
			e.Attrs = v[:len(v):len(v)]
		} else {
			e.Attrs = []byte(e.Log[off : off+l])
		}
		return nil
	}
	v, ok := next()
	if !ok || len(b) != 0 {
		return ErrCorrupt
	}
	if len(v) > 0 {
		if shared {
			e.Attrs = v[:len(v):len(v)]
		} else {
			e.Attrs = append([]byte(nil), v...)
		}
	}
	return nil
}

// Format is how an output renders an event.
type Format string

const (
	// FormatJSON is one JSON object per line with the tags, the line and
	// the parsed attributes.
	FormatJSON Format = "json"
	// FormatRaw is the original line only.
	FormatRaw Format = "raw"
)

// ParseFormat reads json or raw ("" is json).
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "json":
		return FormatJSON, nil
	case "raw":
		return FormatRaw, nil
	}
	return "", errors.New("want json or raw")
}

// AppendLine appends e rendered in format f plus a newline.
func (e *Event) AppendLine(b []byte, f Format) []byte {
	var r Renderer
	return r.AppendLine(b, e, f)
}

// Renderer renders events as AppendLine does, faster for a run of events
// from one source: the tags are rendered once while they stay the same,
// and the date and time to the second once per second. It compares each
// event's tags with a copy of its own (the events' memory may be reused
// between calls). The zero value is ready; it is not safe for concurrent
// use.
type Renderer struct {
	tags     [8]string // cluster, service, container, task, source, level, run id, tag: in tagsMem
	tagsMem  []byte
	tagsJSON []byte
	sec      int64 // Unix second of secJSON; valid when secJSON is not empty
	secJSON  []byte
}

// AppendLine appends e rendered in format f plus a newline.
func (r *Renderer) AppendLine(b []byte, e *Event, f Format) []byte {
	if f == FormatRaw {
		b = append(b, e.Log...)
		return append(b, '\n')
	}
	b = append(b, `{"time":"`...)
	b = r.appendTime(b, e.Time)
	b = append(b, '"')
	tags := [8]string{e.Cluster, e.Service, e.Container, e.Task, e.Source, e.Level, e.RunID, e.Tag}
	if r.tagsJSON == nil || tags != r.tags {
		r.keepTags(&tags)
		t := r.tagsJSON[:0]
		t = appendField(t, "cluster", e.Cluster)
		t = appendField(t, "service", e.Service)
		t = appendField(t, "container", e.Container)
		t = appendField(t, "task", e.Task)
		t = appendField(t, "source", e.Source)
		t = appendField(t, "level", e.Level)
		if e.RunID != "" {
			t = appendField(t, "run_id", e.RunID)
		}
		if e.Tag != "" {
			t = appendField(t, "tag", e.Tag)
		}
		r.tagsJSON = t
	}
	b = append(b, r.tagsJSON...)
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

// keepTags sets r.tags to a copy of tags in r's own memory.
func (r *Renderer) keepTags(tags *[8]string) {
	n := 0
	for _, t := range tags {
		n += len(t)
	}
	if cap(r.tagsMem) < n {
		r.tagsMem = make([]byte, 0, 2*n)
	}
	m := r.tagsMem[:0]
	for i, t := range tags {
		m = append(m, t...)
		r.tags[i] = unsafe.String(unsafe.SliceData(m[len(m)-len(t):]), len(t))
	}
	r.tagsMem = m
}

// appendTime appends t in UTC as time.RFC3339Nano: the part up to the
// second from the cache (formatted by the time package), then the
// fraction without trailing zeros.
func (r *Renderer) appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec, ns := t.Unix(), t.Nanosecond()
	if len(r.secJSON) == 0 || sec != r.sec {
		if y := t.Year(); y < 0 || y > 9999 { // beyond four digits: as it is
			return t.AppendFormat(b, time.RFC3339Nano)
		}
		r.sec = sec
		r.secJSON = t.AppendFormat(r.secJSON[:0], "2006-01-02T15:04:05")
	}
	b = append(b, r.secJSON...)
	if ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z')
}

func appendField(b []byte, k, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	b = append(b, '"', ':')
	return AppendJSONString(b, v)
}

const hex = "0123456789abcdef"

// plain marks the ASCII bytes a JSON string holds as they are.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	// Fast path: printable ASCII, quotes and backslashes, copied byte by
	// byte into room grown once (a log line that is JSON has a quote every
	// few bytes, so runs are short). It stops at the first byte that needs
	// more care; the loop below does the rest.
	b = slices.Grow(b, 2*len(s)+1)
	n, i := len(b), 0
	out := b[:n+2*len(s)] // room for every byte escaped as two
	for ; i < len(s); i++ {
		c := s[i]
		if plain[c] {
			out[n] = c
			n++
			continue
		}
		if c != '"' && c != '\\' {
			break
		}
		out[n] = '\\'
		out[n+1] = c
		n += 2
	}
	b, s = out[:n], s[i:]
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

// String is a short description for logs and tests.
func (e *Event) String() string {
	return e.Cluster + "/" + e.Service + "/" + e.Container + " " + e.Level + " " + strconv.Quote(e.Log)
}
