package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
)

// Reader pages records out of the spool in order, starting at the
// checkpoint. There is one reader per spool.
type Reader struct {
	s   *Spool
	pos Pos
	f   *os.File
	buf []byte
	// avg is the mean framed size of the records of the last full read,
	// which sizes the next read.
	avg int
	// owned: every read goes to a fresh buffer, so records stay valid.
	owned bool
	// recs and starts back the lists of the batches (not owned).
	recs   [][]byte
	starts []Pos
}

// SetOwned makes the records of every batch stay valid after later calls
// (each read goes to a buffer of its own instead of a reused one), so a
// caller that keeps them needs no copy.
func (r *Reader) SetOwned(owned bool) { r.owned = owned }

// NewReader starts at the committed position.
func (s *Spool) NewReader() *Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Reader{s: s, pos: s.committed}
}

// Batch is what Next returns: record payloads (valid until the next call
// unless the reader is SetOwned) and the position after the last one.
type Batch struct {
	Records [][]byte
	// Starts are the positions of the records (valid like Records).
	Starts []Pos
	End    Pos
}

// Next returns up to maxRecords records totalling about maxBytes, waiting
// up to wait for the first one. An empty batch means nothing arrived.
func (r *Reader) Next(ctx context.Context, maxRecords int, maxBytes int, wait time.Duration) (Batch, error) {
	var timer <-chan time.Time
	for {
		r.s.mu.Lock()
		synced, notify := r.s.synced, r.s.notify
		r.s.mu.Unlock()
		if r.pos.Less(synced) {
			b, err := r.read(synced, maxRecords, maxBytes)
			if err != nil || len(b.Records) > 0 {
				return b, err
			}
			continue // moved to the next segment
		}
		if timer == nil {
			if wait <= 0 {
				return Batch{End: r.pos}, nil
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-notify:
		case <-timer:
			return Batch{End: r.pos}, nil
		case <-ctx.Done():
			return Batch{End: r.pos}, ctx.Err()
		}
	}
}

// Pending reports whether durable records wait to be read.
func (r *Reader) Pending() bool {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.pos.Less(r.s.synced)
}

func (r *Reader) open() error {
	if r.f != nil {
		return nil
	}
	f, err := os.Open(r.s.segPath(r.pos.Seg))
	if err != nil {
		return fmt.Errorf("open spool segment for reading: %w", err)
	}
	r.f = f
	return nil
}

func (r *Reader) nextSegment() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	r.pos = Pos{Seg: r.pos.Seg + 1}
}

func (r *Reader) read(synced Pos, maxRecords, maxBytes int) (Batch, error) {
	if err := r.open(); err != nil {
		if errors.Is(err, os.ErrNotExist) && r.pos.Seg < synced.Seg {
			r.nextSegment()
			return Batch{End: r.pos}, nil
		}
		return Batch{End: r.pos}, err
	}
	limit := synced.Off
	if r.pos.Seg < synced.Seg {
		r.s.mu.Lock()
		sz, ok := r.s.segSizes[r.pos.Seg]
		r.s.mu.Unlock()
		if !ok {
			fi, err := r.f.Stat()
			if err != nil {
				return Batch{End: r.pos}, fmt.Errorf("stat spool segment: %w", err)
			}
			sz = fi.Size()
		}
		limit = sz
	}
	if r.pos.Off >= limit {
		if r.pos.Seg < synced.Seg {
			r.nextSegment()
		}
		return Batch{End: r.pos}, nil
	}
	want := min(limit-r.pos.Off, int64(max(maxBytes, headerLen)))
	if r.avg > 0 {
		// About what maxRecords records take, not a whole maxBytes: the
		// rest of a larger read would be read again next time.
		want = min(want, int64(r.avg)*int64(maxRecords)*5/4)
	}
	want = max(want, min(limit-r.pos.Off, 64<<10))
	if r.owned || int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	buf := r.buf[:want]
	if _, err := r.f.ReadAt(buf, r.pos.Off); err != nil {
		return Batch{End: r.pos}, fmt.Errorf("read spool segment: %w", err)
	}
	var b Batch
	if !r.owned { // the lists are reused too
		b.Records, b.Starts = r.recs[:0], r.starts[:0]
		defer func() { r.recs, r.starts = b.Records, b.Starts }()
	}
	off := 0
	for len(b.Records) < maxRecords {
		if len(buf)-off < headerLen {
			break
		}
		l := int(binary.BigEndian.Uint32(buf[off:]))
		if int64(l) > limit-r.pos.Off {
			r.skipCorrupt(synced)
			break
		}
		if len(buf)-off-headerLen < l {
			if off == 0 {
				// One record larger than the read: read exactly it.
				big := make([]byte, headerLen+l)
				if _, err := r.f.ReadAt(big, r.pos.Off); err != nil {
					return Batch{End: r.pos}, fmt.Errorf("read spool segment: %w", err)
				}
				r.buf, buf = big, big
				continue
			}
			break
		}
		body := buf[off+headerLen : off+headerLen+l]
		if crc(buf[off+8:off+16], body) != binary.BigEndian.Uint32(buf[off+4:]) {
			r.skipCorrupt(synced)
			break
		}
		b.Records = append(b.Records, body[:len(body):len(body)])
		b.Starts = append(b.Starts, r.pos)
		off += headerLen + l
		r.pos.Off += int64(headerLen + l)
		if off >= maxBytes {
			break
		}
	}
	if len(b.Records) > 0 {
		r.avg = off / len(b.Records)
	}
	if r.pos.Off >= limit && r.pos.Seg < synced.Seg {
		end := r.pos
		r.nextSegment()
		// Committing the end of a finished segment equals the start of the next.
		_ = end
	}
	b.End = r.pos
	return b, nil
}

// skipCorrupt abandons the rest of the current segment after a checksum
// failure below the durable mark (disk corruption: nothing to resync on).
func (r *Reader) skipCorrupt(synced Pos) {
	r.s.mu.Lock()
	r.s.corrupt++
	r.s.mu.Unlock()
	r.s.log.Error("spool record checksum mismatch; skipping the rest of the segment", "segment", segName(r.pos.Seg), "offset", r.pos.Off)
	if r.pos.Seg < synced.Seg {
		r.nextSegment()
	} else {
		r.pos = synced
	}
}

// Close releases the reader's file.
func (r *Reader) Close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}
