package forward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/taskyard/taskyard/services/logrouter/internal/record"
)

// A small MessagePack reader over a complete frame held in memory. It
// knows exactly the shapes the Forward protocol uses and refuses the rest
// with an error that says what was wrong; nothing it reads can make it
// allocate more than the frame's own size.

var (
	errShort       = errors.New("msgpack: truncated")
	errInvalidUTF8 = errors.New("string is not valid UTF-8")
)

// maxDepth bounds nesting of records (a defence against stack exhaustion).
const maxDepth = 64

// objLen returns the length of the MessagePack object at the start of b,
// or errShort when b holds only part of it.
func objLen(b []byte) (int, error) { return skip(b, 0, 0) }

func skip(b []byte, i int, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("msgpack: nesting deeper than %d", maxDepth)
	}
	if i >= len(b) {
		return 0, errShort
	}
	c := b[i]
	i++
	need := func(k int) (int, error) {
		if len(b)-i < k {
			return 0, errShort
		}
		return i + k, nil
	}
	lenN := func(k int) (int, int, error) {
		if len(b)-i < k {
			return 0, 0, errShort
		}
		var l uint64
		switch k {
		case 1:
			l = uint64(b[i])
		case 2:
			l = uint64(binary.BigEndian.Uint16(b[i:]))
		case 4:
			l = uint64(binary.BigEndian.Uint32(b[i:]))
		}
		return int(l), i + k, nil
	}
	switch {
	case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3:
		return i, nil
	case c >= 0x80 && c <= 0x8f:
		return skipN(b, i, int(c&0x0f)*2, depth)
	case c >= 0x90 && c <= 0x9f:
		return skipN(b, i, int(c&0x0f), depth)
	case c >= 0xa0 && c <= 0xbf:
		return need(int(c & 0x1f))
	}
	switch c {
	case 0xc4, 0xd9:
		l, j, err := lenN(1)
		if err != nil {
			return 0, err
		}
		i = j
		return need(l)
	case 0xc5, 0xda:
		l, j, err := lenN(2)
		if err != nil {
			return 0, err
		}
		i = j
		return need(l)
	case 0xc6, 0xdb:
		l, j, err := lenN(4)
		if err != nil {
			return 0, err
		}
		i = j
		return need(l)
	case 0xc7:
		l, j, err := lenN(1)
		if err != nil {
			return 0, err
		}
		i = j
		return need(l + 1)
	case 0xc8:
		l, j, err := lenN(2)
		if err != nil {
			return 0, err
		}
		i = j
		return need(l + 1)
	case 0xc9:
		l, j, err := lenN(4)
		if err != nil {
			return 0, err
		}
		i = j
		return need(l + 1)
	case 0xca:
		return need(4)
	case 0xcb:
		return need(8)
	case 0xcc, 0xd0:
		return need(1)
	case 0xcd, 0xd1:
		return need(2)
	case 0xce, 0xd2:
		return need(4)
	case 0xcf, 0xd3:
		return need(8)
	case 0xd4:
		return need(2)
	case 0xd5:
		return need(3)
	case 0xd6:
		return need(5)
	case 0xd7:
		return need(9)
	case 0xd8:
		return need(17)
	case 0xdc:
		l, j, err := lenN(2)
		if err != nil {
			return 0, err
		}
		return skipN(b, j, l, depth)
	case 0xdd:
		l, j, err := lenN(4)
		if err != nil {
			return 0, err
		}
		return skipN(b, j, l, depth)
	case 0xde:
		l, j, err := lenN(2)
		if err != nil {
			return 0, err
		}
		return skipN(b, j, l*2, depth)
	case 0xdf:
		l, j, err := lenN(4)
		if err != nil {
			return 0, err
		}
		return skipN(b, j, l*2, depth)
	}
	return 0, fmt.Errorf("msgpack: invalid type byte 0x%02x", c)
}

func skipN(b []byte, i, n, depth int) (int, error) {
	for k := 0; k < n; k++ {
		j, err := skip(b, i, depth+1)
		if err != nil {
			return 0, err
		}
		i = j
	}
	return i, nil
}

// reader decodes values from a complete buffer.
type reader struct {
	b []byte
	i int
	// s, when not empty, holds the same bytes as b: decoded strings are
	// substrings of it instead of one allocation each.
	s string
	// slab backs the fields of the records read (one allocation for many
	// records instead of one per record); buf's slab when buf is set.
	slab record.Record
	buf  *Buffers
}

// text returns v, the bytes just taken (they end at r.i), as a string.
func (r *reader) text(v []byte) string {
	if len(r.s) == len(r.b) && len(r.s) > 0 {
		return r.s[r.i-len(v) : r.i]
	}
	return string(v)
}

// fields returns room for n fields of a record.
func (r *reader) fields(n int) record.Record {
	slab, grow := &r.slab, 0
	if r.buf != nil {
		// Reused frame after frame: a slab that ran out is replaced by one
		// twice as large, so the next frames fit in one.
		slab, grow = &r.buf.slab, 2*cap(r.buf.slab)
	}
	if cap(*slab)-len(*slab) < n {
		*slab = make(record.Record, 0, max(n, 1024, grow))
	}
	l := len(*slab)
	*slab = (*slab)[:l+n]
	return (*slab)[l : l+n : l+n]
}

func (r *reader) done() bool { return r.i >= len(r.b) }

func (r *reader) peek() (byte, error) {
	if r.i >= len(r.b) {
		return 0, errShort
	}
	return r.b[r.i], nil
}

func (r *reader) take(n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.i < n {
		return nil, errShort
	}
	v := r.b[r.i : r.i+n]
	r.i += n
	return v, nil
}

func (r *reader) byte1() (byte, error) {
	v, err := r.take(1)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

func (r *reader) uintN(n int) (uint64, error) {
	v, err := r.take(n)
	if err != nil {
		return 0, err
	}
	switch n {
	case 1:
		return uint64(v[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(v)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(v)), nil
	default:
		return binary.BigEndian.Uint64(v), nil
	}
}

// kind classifies the next value.
type kind int

const (
	kNil kind = iota
	kBool
	kInt
	kFloat
	kStr
	kBin
	kArray
	kMap
	kExt
	kInvalid
)

func kindOf(c byte) kind {
	switch {
	case c <= 0x7f, c >= 0xe0:
		return kInt
	case c >= 0x80 && c <= 0x8f:
		return kMap
	case c >= 0x90 && c <= 0x9f:
		return kArray
	case c >= 0xa0 && c <= 0xbf:
		return kStr
	}
	switch c {
	case 0xc0:
		return kNil
	case 0xc2, 0xc3:
		return kBool
	case 0xc4, 0xc5, 0xc6:
		return kBin
	case 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return kExt
	case 0xca, 0xcb:
		return kFloat
	case 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3:
		return kInt
	case 0xd9, 0xda, 0xdb:
		return kStr
	case 0xdc, 0xdd:
		return kArray
	case 0xde, 0xdf:
		return kMap
	}
	return kInvalid
}

func (r *reader) arrayLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), nil
	case c == 0xdc:
		n, err := r.uintN(2)
		return int(n), err
	case c == 0xdd:
		n, err := r.uintN(4)
		return int(n), err
	}
	return 0, fmt.Errorf("want an array, got %s", typeName(c))
}

func (r *reader) mapLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), nil
	case c == 0xde:
		n, err := r.uintN(2)
		return int(n), err
	case c == 0xdf:
		n, err := r.uintN(4)
		return int(n), err
	}
	return 0, fmt.Errorf("want a map, got %s", typeName(c))
}

// bytes reads a str or bin.
func (r *reader) bytes() ([]byte, error) {
	c, err := r.byte1()
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n = uint64(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.uintN(1)
	case c == 0xda || c == 0xc5:
		n, err = r.uintN(2)
	case c == 0xdb || c == 0xc6:
		n, err = r.uintN(4)
	default:
		return nil, fmt.Errorf("want a string, got %s", typeName(c))
	}
	if err != nil {
		return nil, err
	}
	return r.take(int(n))
}

// str reads a str or bin that must be valid UTF-8.
func (r *reader) str() (string, error) {
	b, err := r.bytes()
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", errInvalidUTF8
	}
	return string(b), nil
}

func (r *reader) int() (int64, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	}
	switch c {
	case 0xcc, 0xcd, 0xce, 0xcf:
		n := map[byte]int{0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[c]
		v, err := r.uintN(n)
		if err != nil {
			return 0, err
		}
		if v > math.MaxInt64 {
			return 0, errors.New("integer overflows int64")
		}
		return int64(v), nil
	case 0xd0:
		v, err := r.uintN(1)
		return int64(int8(v)), err
	case 0xd1:
		v, err := r.uintN(2)
		return int64(int16(v)), err
	case 0xd2:
		v, err := r.uintN(4)
		return int64(int32(v)), err
	case 0xd3:
		v, err := r.uintN(8)
		return int64(v), err
	}
	return 0, fmt.Errorf("want an integer, got %s", typeName(c))
}

// eventTime reads an integer time, a float time or an EventTime
// extension (type 0, 8 bytes: seconds and nanoseconds, big-endian) in
// its fixext8 or ext8 form.
func (r *reader) eventTime() (time.Time, error) {
	c, err := r.peek()
	if err != nil {
		return time.Time{}, err
	}
	switch kindOf(c) {
	case kInt:
		v, err := r.int()
		if err != nil {
			return time.Time{}, err
		}
		return time.Unix(v, 0), nil
	case kFloat:
		v, err := r.value(0)
		if err != nil {
			return time.Time{}, err
		}
		f := v.(float64)
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
			return time.Time{}, errors.New("time is not a valid float")
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	case kExt:
		r.i++
		var typ byte
		var n uint64
		switch c {
		case 0xd7:
			n = 8
		case 0xc7:
			n, err = r.uintN(1)
		default:
			return time.Time{}, fmt.Errorf("want EventTime (fixext8 or ext8 of type 0), got %s", typeName(c))
		}
		if err != nil {
			return time.Time{}, err
		}
		typ, err = r.byte1()
		if err != nil {
			return time.Time{}, err
		}
		if typ != 0 || n != 8 {
			return time.Time{}, fmt.Errorf("want EventTime (ext type 0, 8 bytes), got ext type %d of %d bytes", int8(typ), n)
		}
		v, err := r.take(8)
		if err != nil {
			return time.Time{}, err
		}
		sec, nsec := binary.BigEndian.Uint32(v), binary.BigEndian.Uint32(v[4:])
		if nsec >= 1e9 {
			return time.Time{}, fmt.Errorf("EventTime nanoseconds %d out of range", nsec)
		}
		return time.Unix(int64(sec), int64(nsec)), nil
	}
	return time.Time{}, fmt.Errorf("want a time, got %s", typeName(c))
}

// value decodes any value: strings (str and bin) become string, integers
// int64 (uint64 above MaxInt64), floats float64, arrays []any, maps
// map[string]any, extensions their raw bytes as a string.
func (r *reader) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	c, err := r.peek()
	if err != nil {
		return nil, err
	}
	switch kindOf(c) {
	case kNil:
		r.i++
		return nil, nil
	case kBool:
		r.i++
		return c == 0xc3, nil
	case kInt:
		if c == 0xcf {
			r.i++
			v, err := r.uintN(8)
			if err != nil {
				return nil, err
			}
			if v > math.MaxInt64 {
				return v, nil
			}
			return int64(v), nil
		}
		return r.int()
	case kFloat:
		r.i++
		if c == 0xca {
			v, err := r.uintN(4)
			return float64(math.Float32frombits(uint32(v))), err
		}
		v, err := r.uintN(8)
		return math.Float64frombits(v), err
	case kStr, kBin:
		b, err := r.bytes()
		if err != nil {
			return nil, err
		}
		return r.text(b), nil
	case kArray:
		n, err := r.arrayLen()
		if err != nil {
			return nil, err
		}
		if n > len(r.b)-r.i {
			return nil, errShort
		}
		a := make([]any, 0, n)
		for k := 0; k < n; k++ {
			v, err := r.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case kMap:
		return r.mapValue(depth)
	case kExt:
		start := r.i
		end, err := skip(r.b, r.i, depth)
		if err != nil {
			return nil, err
		}
		r.i = end
		return r.text(r.b[start:end]), nil
	}
	return nil, fmt.Errorf("invalid type byte 0x%02x", c)
}

// recordValue reads a record map into a record.Record, strings unboxed.
func (r *reader) recordValue() (record.Record, error) {
	n, err := r.mapLen()
	if err != nil {
		return nil, err
	}
	if n > (len(r.b)-r.i)/2 {
		return nil, errShort
	}
	rec := r.fields(n)
	for k := 0; k < n; k++ {
		key, err := r.bytes()
		if err != nil {
			return nil, fmt.Errorf("map key: %w", err)
		}
		f := &rec[k]
		if f.Key = intern(key); f.Key == "" { // interned keys are known UTF-8
			if !utf8.Valid(key) {
				return nil, fmt.Errorf("map key %q: %w", key, errInvalidUTF8)
			}
			f.Key = r.text(key)
		}
		c, err := r.peek()
		if err != nil {
			return nil, err
		}
		if kd := kindOf(c); kd == kStr || kd == kBin {
			b, err := r.bytes()
			if err != nil {
				return nil, err
			}
			f.Str, f.IsStr = r.text(b), true
			continue
		}
		if f.Val, err = r.value(1); err != nil {
			return nil, err
		}
	}
	return rec, nil
}

func (r *reader) mapValue(depth int) (map[string]any, error) {
	n, err := r.mapLen()
	if err != nil {
		return nil, err
	}
	if n > (len(r.b)-r.i)/2 {
		return nil, errShort
	}
	m := make(map[string]any, n)
	for k := 0; k < n; k++ {
		key, err := r.bytes()
		if err != nil {
			return nil, fmt.Errorf("map key: %w", err)
		}
		if !utf8.Valid(key) {
			return nil, fmt.Errorf("map key %q: %w", key, errInvalidUTF8)
		}
		v, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		k := intern(key)
		if k == "" {
			k = string(key)
		}
		m[k] = v
	}
	return m, nil
}

// intern returns the keys every FireLens / Docker record carries without
// allocating a new string for each record; "" for other keys.
func intern(k []byte) string {
	switch string(k) {
	case "log":
		return "log"
	case "source":
		return "source"
	case "container_id":
		return "container_id"
	case "container_name":
		return "container_name"
	case "ecs_cluster":
		return "ecs_cluster"
	case "ecs_task_arn":
		return "ecs_task_arn"
	case "ecs_task_definition":
		return "ecs_task_definition"
	case "partial_message":
		return "partial_message"
	case "cluster":
		return "cluster"
	case "service":
		return "service"
	case "container":
		return "container"
	case "task":
		return "task"
	case "taskyard_run_id":
		return "taskyard_run_id"
	}
	return ""
}

func typeName(c byte) string {
	switch kindOf(c) {
	case kNil:
		return "nil"
	case kBool:
		return "a bool"
	case kInt:
		return "an integer"
	case kFloat:
		return "a float"
	case kStr:
		return "a string"
	case kBin:
		return "binary"
	case kArray:
		return "an array"
	case kMap:
		return "a map"
	case kExt:
		return "an extension"
	}
	return fmt.Sprintf("invalid type byte 0x%02x", c)
}
