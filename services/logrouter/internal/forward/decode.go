package forward

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unsafe"

	"github.com/taskyard/taskyard/services/logrouter/internal/record"
)

// Entry is one record of a frame.
type Entry struct {
	Time   time.Time
	Record record.Record
	// Metadata is Fluent Bit's per-record metadata map (the
	// [[time, metadata], record] form); nil otherwise.
	Metadata map[string]any
}

// Mode is the Forward protocol carrier mode of a frame.
type Mode string

// The four carrier modes of Forward protocol v1.
const (
	ModeMessage          Mode = "message"
	ModeForward          Mode = "forward"
	ModePackedForward    Mode = "packed_forward"
	ModeCompressedPacked Mode = "compressed_packed_forward"
)

// Frame is one decoded Forward message.
type Frame struct {
	Tag     string
	Mode    Mode
	Entries []Entry
	// Chunk is the option `chunk`: when set the sender expects
	// {"ack": chunk} once the entries are durable.
	Chunk string
	// Size is the option `size` (number of entries the sender claims).
	Size int64
}

// ProtocolError is a frame the server refuses; the connection is closed.
type ProtocolError struct {
	// Reason is a short label for the counter: malformed, wrong_type,
	// invalid_utf8, bad_gzip, oversize, auth_failed.
	Reason string
	Err    error
}

func (e *ProtocolError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *ProtocolError) Unwrap() error { return e.Err }

func perr(reason string, format string, args ...any) error {
	return &ProtocolError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Limits bound what a frame may expand to.
type Limits struct {
	// MaxDecompressed bounds the decompressed size of a
	// CompressedPackedForward payload.
	MaxDecompressed int
}

// Buffers are the memory a decoded frame lives in, besides the frame's
// own bytes: the decompressed payload, the records' fields and the entry
// list. A server decodes frame after frame into the same Buffers
// (DecodeFrameInto) instead of allocating ~1 MB per 1,000-record frame for
// the garbage collector to find again. Everything decoded into them — the
// Frame, its entries, every string but Tag and Chunk — is valid only until
// Reset; whoever keeps a string longer must copy it.
type Buffers struct {
	zbuf    []byte
	zr      *gzip.Reader
	slab    record.Record // len: the fields handed out since Reset
	entries []Entry
	frame   Frame
}

// maxKeptBuffer is the largest buffer Reset keeps for the next frame;
// larger ones (a rare huge frame) are left to the garbage collector.
const maxKeptBuffer = 8 << 20

// Reset ends the life of the frame decoded last: the memory is reused by
// the next DecodeFrameInto.
func (bf *Buffers) Reset() {
	clear(bf.slab) // drop the references of non-string values
	clear(bf.entries)
	bf.slab, bf.entries, bf.frame = bf.slab[:0], bf.entries[:0], Frame{}
	if cap(bf.zbuf) > maxKeptBuffer {
		bf.zbuf = nil
	}
	if cap(bf.slab) > maxKeptBuffer/int(unsafe.Sizeof(record.Field{})) {
		bf.slab = nil
	}
	if cap(bf.entries) > maxKeptBuffer/int(unsafe.Sizeof(Entry{})) {
		bf.entries = nil
	}
}

// DecodeFrame decodes one complete Forward message (as delimited by
// objLen) into memory of its own. It validates the whole frame before
// returning any entry, so a frame is taken entirely or not at all.
func DecodeFrame(b []byte, lim Limits) (*Frame, error) { return DecodeFrameInto(b, lim, nil) }

// DecodeFrameInto decodes like DecodeFrame into bf (reset first by the
// caller), and its strings point into b itself: the frame is valid until
// bf.Reset, and b must not change until then (the server's read buffer
// does not while the frame is handled). A nil bf allocates and copies.
func DecodeFrameInto(b []byte, lim Limits, bf *Buffers) (*Frame, error) {
	if lim.MaxDecompressed <= 0 {
		lim.MaxDecompressed = 64 << 20
	}
	// The frame's bytes back every string decoded from it: b itself with
	// bf, else one copy (b is the connection's read buffer, reused for the
	// next frame). Frame.Tag and Frame.Chunk are copied apart so that they
	// do not keep it alive.
	r := &reader{b: b, buf: bf}
	if bf != nil {
		if len(b) > 0 {
			r.s = unsafe.String(unsafe.SliceData(b), len(b))
		}
	} else {
		r.s = string(b)
	}
	n, err := r.arrayLen()
	if err != nil {
		return nil, malformed(err)
	}
	if n < 2 || n > 4 {
		return nil, perr("malformed", "a forward message is an array of 2 to 4 elements, got %d", n)
	}
	f := &Frame{}
	if bf != nil {
		f = &bf.frame
	}
	if f.Tag, err = r.str(); err != nil {
		return nil, wrongType("tag", err)
	}
	c, err := r.peek()
	if err != nil {
		return nil, malformed(err)
	}
	var opt map[string]any
	readOpt := func() error {
		if r.done() {
			return nil
		}
		if c, _ := r.peek(); c == 0xc0 { // nil option
			r.i++
			return nil
		}
		m, err := r.mapValue(0)
		if err != nil {
			return wrongType("option", err)
		}
		opt = m
		return nil
	}
	switch kindOf(c) {
	case kInt, kExt, kFloat: // Message: [tag, time, record, option?]
		f.Mode = ModeMessage
		if n < 3 {
			return nil, perr("malformed", "a Message needs a record after the time")
		}
		e, err := readTimeRecord(r)
		if err != nil {
			return nil, err
		}
		f.Entries = []Entry{e}
		if n == 4 {
			if err := readOpt(); err != nil {
				return nil, err
			}
		}
	case kArray: // Forward: [tag, [[time, record], ...], option?]
		f.Mode = ModeForward
		m, err := r.arrayLen()
		if err != nil {
			return nil, malformed(err)
		}
		if m > len(r.b)-r.i {
			return nil, malformed(errShort)
		}
		f.Entries = bf.entryList(m)
		for k := 0; k < m; k++ {
			e, err := readEntry(r)
			if err != nil {
				return nil, fmt.Errorf("entry %d: %w", k, err)
			}
			f.Entries = append(f.Entries, e)
		}
		if n >= 3 {
			if err := readOpt(); err != nil {
				return nil, err
			}
		}
	case kStr, kBin: // PackedForward: [tag, msgpack stream, option?]
		f.Mode = ModePackedForward
		payload, err := r.bytes()
		if err != nil {
			return nil, malformed(err)
		}
		pOff := r.i - len(payload) // where payload lies in b
		if n >= 3 {
			if err := readOpt(); err != nil {
				return nil, err
			}
		}
		if comp, ok := opt["compressed"]; ok {
			switch comp {
			case "gzip":
				f.Mode = ModeCompressedPacked
				payload, err = bf.gunzip(payload, lim.MaxDecompressed)
				if err != nil {
					return nil, err
				}
			case "text", "":
			default:
				return nil, perr("wrong_type", "option compressed: %v is not supported (want gzip or text)", comp)
			}
		}
		pr := &reader{b: payload, buf: bf}
		if f.Mode == ModeCompressedPacked {
			// Decompressed into a buffer of its own that nothing writes to again.
			pr.s = unsafe.String(unsafe.SliceData(payload), len(payload))
		} else {
			pr.s = r.s[pOff : pOff+len(payload)]
		}
		// The sender's size option, when plausible (an entry takes at least
		// 3 bytes), sizes the entry list.
		if sz, ok := opt["size"].(int64); ok && sz > 0 && sz <= int64(len(payload)/3) {
			f.Entries = bf.entryList(int(sz))
		} else if bf != nil {
			f.Entries = bf.entries[:0]
		}
		for !pr.done() {
			e, err := readEntry(pr)
			if err != nil {
				return nil, fmt.Errorf("packed entry %d: %w", len(f.Entries), err)
			}
			f.Entries = append(f.Entries, e)
		}
	default:
		return nil, perr("wrong_type", "second element is %s: want a time (Message), an array (Forward) or a string/binary (PackedForward)", typeName(c))
	}
	if bf != nil && cap(f.Entries) > 0 {
		bf.entries = f.Entries // grown: keep the larger list
	}
	if !r.done() {
		return nil, perr("malformed", "%d trailing bytes after the message", len(r.b)-r.i)
	}
	if v, ok := opt["chunk"]; ok {
		s, ok := v.(string)
		if !ok {
			return nil, perr("wrong_type", "option chunk: want a string, got %T", v)
		}
		f.Chunk = strings.Clone(s)
	}
	if v, ok := opt["size"]; ok {
		s, ok := v.(int64)
		if !ok {
			return nil, perr("wrong_type", "option size: want an integer, got %T", v)
		}
		f.Size = s
	}
	return f, nil
}

func malformed(err error) error {
	if errors.Is(err, errShort) {
		return perr("malformed", "message is truncated")
	}
	return &ProtocolError{Reason: "malformed", Err: err}
}

func wrongType(what string, err error) error {
	if errors.Is(err, errShort) {
		return malformed(err)
	}
	if errors.Is(err, errInvalidUTF8) {
		return perr("invalid_utf8", "%s: %v", what, err)
	}
	return perr("wrong_type", "%s: %v", what, err)
}

// readEntry reads [time, record] or Fluent Bit's [[time, metadata], record].
func readEntry(r *reader) (Entry, error) {
	n, err := r.arrayLen()
	if err != nil {
		return Entry{}, wrongType("entry", err)
	}
	if n != 2 {
		return Entry{}, perr("malformed", "an entry is [time, record], got an array of %d", n)
	}
	c, err := r.peek()
	if err != nil {
		return Entry{}, malformed(err)
	}
	if kindOf(c) == kArray { // Fluent Bit 2.x: [[time, metadata], record]
		m, err := r.arrayLen()
		if err != nil {
			return Entry{}, malformed(err)
		}
		if m != 2 {
			return Entry{}, perr("malformed", "entry header is [time, metadata], got an array of %d", m)
		}
		t, err := r.eventTime()
		if err != nil {
			return Entry{}, wrongType("time", err)
		}
		md, err := r.value(1)
		if err != nil {
			return Entry{}, wrongType("metadata", err)
		}
		mdm, _ := md.(map[string]any)
		rec, err := r.recordValue()
		if err != nil {
			return Entry{}, wrongType("record", err)
		}
		return Entry{Time: t, Record: rec, Metadata: mdm}, nil
	}
	return readTimeRecord(r)
}

func readTimeRecord(r *reader) (Entry, error) {
	t, err := r.eventTime()
	if err != nil {
		return Entry{}, wrongType("time", err)
	}
	rec, err := r.recordValue()
	if err != nil {
		return Entry{}, wrongType("record", err)
	}
	return Entry{Time: t, Record: rec}, nil
}

// entryList returns an empty entry list with room for n entries: bf's
// when bf is not nil.
func (bf *Buffers) entryList(n int) []Entry {
	if bf == nil {
		return make([]Entry, 0, n)
	}
	if cap(bf.entries) < n {
		bf.entries = make([]Entry, 0, n)
	}
	return bf.entries[:0]
}

// gunzip decompresses every gzip member of b (Fluent Bit and fluentd send
// one member per appended chunk), refusing output beyond max bytes. The
// result is bf's buffer when bf is not nil.
func (bf *Buffers) gunzip(b []byte, max int) ([]byte, error) {
	var zr *gzip.Reader
	var err error
	if bf != nil && bf.zr != nil {
		zr, err = bf.zr, bf.zr.Reset(bytes.NewReader(b))
	} else {
		zr, err = gzip.NewReader(bytes.NewReader(b))
	}
	if err != nil {
		return nil, perr("bad_gzip", "compressed payload: %v", err)
	}
	if bf != nil {
		bf.zr = zr
	}
	zr.Multistream(true)
	var out *bytes.Buffer
	if bf != nil {
		out = bytes.NewBuffer(bf.zbuf[:0])
	} else {
		out = new(bytes.Buffer)
	}
	n, err := io.Copy(out, io.LimitReader(zr, int64(max)+1))
	if bf != nil {
		bf.zbuf = out.Bytes()
	}
	if err != nil {
		return nil, perr("bad_gzip", "compressed payload: %v", err)
	}
	if n > int64(max) {
		return nil, perr("oversize", "compressed payload expands beyond %d bytes", max)
	}
	return out.Bytes(), nil
}
