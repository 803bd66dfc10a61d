// Package spool is an output's durable queue: an append-only log of
// checksummed records in numbered segment files, written by one goroutine
// that fsyncs whole groups of appends at once (group commit), read by one
// consumer that commits how far it has delivered.
//
// Record framing: length (uint32 BE) | CRC-32C of the rest (uint32 BE) |
// append time (int64 BE, Unix ns) | payload. On open, the tail of the last
// segment is checked record by record and cut at the first torn or corrupt
// record, so a crash mid-write loses only appends that were never
// acknowledged. Memory stays bounded: nothing is replayed into memory at
// start, the reader pages records from disk in bounded reads.
//
// A byte quota bounds the disk used by records not yet committed. At the
// quota Append blocks (the caller stops reading its clients) or, with
// DropWhenFull, returns ErrFull at once.
package spool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	// ErrFull is returned by Append on a DropWhenFull spool at its quota.
	ErrFull = errors.New("spool: full")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("spool: closed")
	// ErrTooLarge is returned for a record larger than the quota.
	ErrTooLarge = errors.New("spool: record larger than the spool quota")
)

const headerLen = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configure a spool.
type Options struct {
	// Dir holds the segments and the checkpoint; created if missing.
	Dir string
	// MaxBytes is the quota of uncommitted bytes (default 1 GiB).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment starts (default 64 MiB).
	SegmentBytes int64
	// DropWhenFull makes Append fail with ErrFull instead of blocking.
	DropWhenFull bool
	// NoSync skips fsync (benchmarks of the rest of the path only).
	NoSync bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	Log *slog.Logger
}

// Pos is a position in the spool: a segment and a byte offset in it.
type Pos struct {
	Seg uint64
	Off int64
}

// Less orders positions.
func (p Pos) Less(q Pos) bool { return p.Seg < q.Seg || (p.Seg == q.Seg && p.Off < q.Off) }

// Spool is one output's queue.
type Spool struct {
	o   Options
	log *slog.Logger

	reqs chan *appendReq
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	cond      *sync.Cond // quota waiters
	closed    bool
	used      int64            // uncommitted bytes, including reservations
	segSizes  map[uint64]int64 // sizes of segments at or after the checkpoint
	committed Pos
	synced    Pos           // everything before is durable and readable
	notify    chan struct{} // closed and replaced when synced advances
	oldest    time.Time     // append time of the first uncommitted record
	writeErr  error

	// writer-owned
	seg  uint64
	f    *os.File
	buf  []byte
	size int64

	corrupt int64
	id      string

	// committer-owned (Commit is called by the one consumer), closed by
	// Close: the checkpoint file, rewritten in place, and the segment the
	// oldest uncommitted record's append time was last read from.
	cpMu     sync.Mutex
	cpFile   *os.File
	atSeg    uint64
	atFile   *os.File
	cpClosed bool // after Close: open and close per use
}

type appendReq struct {
	// runs hold whole framed records (header and payload, see Frame).
	runs  [][]byte
	bytes int64
	done  chan error
}

// Commit is the result of an Append: Wait returns once the records are
// durable.
type Commit struct{ ch chan error }

// Wait blocks until the records are fsynced or ctx ends.
func (c *Commit) Wait(ctx context.Context) error {
	select {
	case err := <-c.ch:
		c.ch <- err // let Wait be called again
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Open opens or creates the spool in o.Dir, recovering from a crash.
func Open(o Options) (*Spool, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 64 << 20
	}
	if o.SegmentBytes > o.MaxBytes {
		o.SegmentBytes = max(o.MaxBytes/2, 4096)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	s := &Spool{
		o: o, log: o.Log,
		reqs:     make(chan *appendReq, 256),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		segSizes: map[uint64]int64{},
		notify:   make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	if err := s.loadID(); err != nil {
		return nil, err
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	go s.writer()
	return s, nil
}

// ID is a random name the spool was given when its directory was first
// used, kept in the file "id" there: the same across restarts, so an
// output can name what it delivers after the spool and the position it
// came from, and a delivery repeated after a crash lands on the same name.
func (s *Spool) ID() string { return s.id }

func (s *Spool) loadID() error {
	path := filepath.Join(s.o.Dir, "id")
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); len(id) == 16 && strings.Trim(id, "0123456789abcdef") == "" {
			s.id = id
			return nil
		}
		s.log.Warn("spool id file unreadable, naming the spool anew", "path", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read spool id: %w", err)
	}
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return fmt.Errorf("spool id: %w", err)
	}
	s.id = hex.EncodeToString(r[:])
	if err := os.WriteFile(path+".tmp", []byte(s.id+"\n"), 0o644); err != nil {
		return fmt.Errorf("write spool id: %w", err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return fmt.Errorf("write spool id: %w", err)
	}
	return s.syncDir()
}

func segName(n uint64) string { return fmt.Sprintf("%016d.seg", n) }

func (s *Spool) segPath(n uint64) string { return filepath.Join(s.o.Dir, segName(n)) }

func (s *Spool) listSegments() ([]uint64, error) {
	ents, err := os.ReadDir(s.o.Dir)
	if err != nil {
		return nil, fmt.Errorf("list spool dir: %w", err)
	}
	var segs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, n)
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i] < segs[j] })
	return segs, nil
}

func (s *Spool) recover() error {
	cp, err := s.readCheckpoint()
	if err != nil {
		s.log.Warn("spool checkpoint unreadable, replaying from the oldest segment", "dir", s.o.Dir, "err", err)
	}
	segs, err := s.listSegments()
	if err != nil {
		return err
	}
	if len(segs) > 0 && cp.Seg < segs[0] {
		cp = Pos{Seg: segs[0]}
	}
	var keep []uint64
	for _, n := range segs {
		if n < cp.Seg {
			_ = os.Remove(s.segPath(n))
			continue
		}
		keep = append(keep, n)
	}
	last := cp.Seg
	if len(keep) == 0 {
		last = max(cp.Seg, 1)
		cp = Pos{Seg: last}
	} else {
		last = keep[len(keep)-1]
	}
	for _, n := range keep[:max(len(keep)-1, 0)] {
		fi, err := os.Stat(s.segPath(n))
		if err != nil {
			return fmt.Errorf("stat spool segment: %w", err)
		}
		s.segSizes[n] = fi.Size()
	}
	// Check the last segment record by record and cut a torn tail.
	good, err := s.scanValid(last)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(s.segPath(last), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open spool segment: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat spool segment: %w", err)
	}
	if fi.Size() != good {
		s.log.Warn("spool torn tail cut", "segment", segName(last), "size", fi.Size(), "valid", good)
		if err := f.Truncate(good); err != nil {
			f.Close()
			return fmt.Errorf("truncate torn spool tail: %w", err)
		}
		_ = f.Sync()
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("seek spool segment: %w", err)
	}
	s.seg, s.f, s.size = last, f, good
	s.segSizes[last] = good
	if cp.Seg == last && cp.Off > good {
		cp.Off = good
	}
	for cp.Seg < last {
		if sz, ok := s.segSizes[cp.Seg]; ok && cp.Off < sz {
			break
		}
		_ = os.Remove(s.segPath(cp.Seg))
		delete(s.segSizes, cp.Seg)
		cp = Pos{Seg: cp.Seg + 1}
	}
	s.committed = cp
	s.synced = Pos{Seg: last, Off: good}
	for n, sz := range s.segSizes {
		if n == cp.Seg {
			s.used += sz - cp.Off
		} else {
			s.used += sz
		}
	}
	s.oldest = s.appendTimeAt(cp)
	return s.syncDir()
}

// scanValid returns the length of the valid prefix of segment n.
func (s *Spool) scanValid(n uint64) (int64, error) {
	f, err := os.Open(s.segPath(n))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	var off int64
	hdr := make([]byte, headerLen)
	var body []byte
	for {
		if _, err := f.ReadAt(hdr, off); err != nil {
			return off, nil
		}
		l := int64(binary.BigEndian.Uint32(hdr))
		if l > s.o.SegmentBytes+s.o.MaxBytes {
			return off, nil
		}
		if int64(cap(body)) < l {
			body = make([]byte, l)
		}
		body = body[:l]
		if _, err := f.ReadAt(body, off+headerLen); err != nil {
			return off, nil
		}
		if crc(hdr[8:16], body) != binary.BigEndian.Uint32(hdr[4:8]) {
			return off, nil
		}
		off += headerLen + l
	}
}

func crc(ts, body []byte) uint32 {
	c := crc32.Update(0, castagnoli, ts)
	return crc32.Update(c, castagnoli, body)
}

// appendTimeAt reads the append time of the record at p; zero when there
// is none. Called with cpMu held, or before the spool is shared.
func (s *Spool) appendTimeAt(p Pos) time.Time {
	if s.atFile == nil || s.atSeg != p.Seg {
		if s.atFile != nil {
			s.atFile.Close()
			s.atFile = nil
		}
		f, err := os.Open(s.segPath(p.Seg))
		if err != nil {
			return time.Time{}
		}
		s.atFile, s.atSeg = f, p.Seg
	}
	var hdr [headerLen]byte
	_, err := s.atFile.ReadAt(hdr[:], p.Off)
	if s.cpClosed {
		s.atFile.Close()
		s.atFile = nil
	}
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(hdr[8:16])))
}

func (s *Spool) syncDir() error {
	if s.o.NoSync {
		return nil
	}
	d, err := os.Open(s.o.Dir)
	if err != nil {
		return fmt.Errorf("open spool dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync spool dir: %w", err)
	}
	return nil
}

func (s *Spool) readCheckpoint() (Pos, error) {
	// Left by versions that replaced the checkpoint by a rename.
	_ = os.Remove(filepath.Join(s.o.Dir, "checkpoint.tmp"))
	b, err := os.ReadFile(filepath.Join(s.o.Dir, "checkpoint"))
	if errors.Is(err, os.ErrNotExist) {
		return Pos{}, nil
	}
	if err != nil {
		return Pos{}, err
	}
	if len(b) != 20 || crc32.Checksum(b[:16], castagnoli) != binary.BigEndian.Uint32(b[16:]) {
		return Pos{}, errors.New("bad checkpoint file")
	}
	return Pos{Seg: binary.BigEndian.Uint64(b), Off: int64(binary.BigEndian.Uint64(b[8:]))}, nil
}

// Append queues recs for the writer. It blocks while the spool is at its
// quota (unless DropWhenFull). The returned Commit reports durability.
func (s *Spool) Append(ctx context.Context, recs [][]byte) (*Commit, error) {
	n := 0
	for _, r := range recs {
		n += headerLen + len(r)
	}
	buf := make([]byte, 0, n)
	now := s.o.Now()
	for _, r := range recs {
		buf = Frame(buf, now, r)
	}
	return s.AppendFramed(ctx, [][]byte{buf})
}

// HeaderLen is the size of a record's header in the spool.
const HeaderLen = headerLen

// BeginFrame reserves the header of a record at the end of b; append the
// payload, then call EndFrame with the returned start.
func BeginFrame(b []byte) (framed []byte, start int) {
	var h [headerLen]byte
	return append(b, h[:]...), len(b)
}

// EndFrame completes the record begun at b[start] (its payload runs to
// the end of b) with its length, append time and checksum.
func EndFrame(b []byte, start int, now time.Time) {
	h := b[start : start+headerLen]
	body := b[start+headerLen:]
	binary.BigEndian.PutUint32(h[0:4], uint32(len(body)))
	binary.BigEndian.PutUint64(h[8:16], uint64(now.UnixNano()))
	binary.BigEndian.PutUint32(h[4:8], crc(h[8:16], body))
}

// Frame appends rec framed as a spool record (header and payload) to b.
func Frame(b []byte, now time.Time, rec []byte) []byte {
	b, start := BeginFrame(b)
	b = append(b, rec...)
	EndFrame(b, start, now)
	return b
}

// AppendFramed queues runs of records framed by Frame (or BeginFrame and
// EndFrame), each run one or more whole records back to back. Checksums
// are thus computed by the appending goroutines, in parallel, and the
// writer writes each run as it is, without a copy; the caller must not
// modify the runs afterwards. It blocks while the spool is at its quota
// (unless DropWhenFull). The returned Commit reports durability.
func (s *Spool) AppendFramed(ctx context.Context, runs [][]byte) (*Commit, error) {
	var n int64
	for _, run := range runs {
		for off := 0; off < len(run); {
			if len(run)-off < headerLen || uint64(binary.BigEndian.Uint32(run[off:])) > uint64(len(run)-off-headerLen) {
				return nil, errors.New("spool: AppendFramed of a run that does not hold whole framed records")
			}
			off += headerLen + int(binary.BigEndian.Uint32(run[off:]))
		}
		n += int64(len(run))
	}
	if n > s.o.MaxBytes {
		return nil, ErrTooLarge
	}
	s.mu.Lock()
	for !s.closed && s.used+n > s.o.MaxBytes {
		if s.o.DropWhenFull {
			s.mu.Unlock()
			return nil, ErrFull
		}
		if ctx.Err() != nil {
			s.mu.Unlock()
			return nil, ctx.Err()
		}
		// Woken by Commit, Close, or the context watcher below.
		stopWatch := context.AfterFunc(ctx, func() {
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
		})
		s.cond.Wait()
		stopWatch()
	}
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if s.writeErr != nil {
		err := s.writeErr
		s.mu.Unlock()
		return nil, err
	}
	s.used += n
	s.mu.Unlock()
	r := &appendReq{runs: runs, bytes: n, done: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.stop:
		s.release(n)
		return nil, ErrClosed
	}
	return &Commit{ch: r.done}, nil
}

func (s *Spool) release(n int64) {
	s.mu.Lock()
	s.used -= n
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Err is the write error that stopped the spool, if any (appends fail
// until the process restarts and recovers the spool).
func (s *Spool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeErr
}

// MaxBytes is the quota.
func (s *Spool) MaxBytes() int64 { return s.o.MaxBytes }

// Full reports whether the spool is at its quota.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used >= s.o.MaxBytes
}

func (s *Spool) writer() {
	defer close(s.done)
	var batch []*appendReq
	for {
		batch = batch[:0]
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		case <-s.stop:
			// Drain what was queued before Close.
			for {
				select {
				case r := <-s.reqs:
					batch = append(batch, r)
					continue
				default:
				}
				break
			}
			if len(batch) > 0 {
				s.commitBatch(batch)
			}
			if s.f != nil {
				s.f.Close()
			}
			return
		}
	gather:
		for len(batch) < 4096 {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		s.commitBatch(batch)
	}
}

func (s *Spool) commitBatch(batch []*appendReq) {
	err := s.writeBatch(batch)
	for _, r := range batch {
		if err != nil {
			s.release(r.bytes)
		}
		r.done <- err
	}
}

func (s *Spool) writeBatch(batch []*appendReq) error {
	s.mu.Lock()
	werr := s.writeErr
	s.mu.Unlock()
	if werr != nil {
		return werr
	}
	var first time.Time // append time of the batch's first record
	s.buf = s.buf[:0]
	for _, r := range batch {
		for _, run := range r.runs {
			if first.IsZero() && len(run) > 0 {
				first = time.Unix(0, int64(binary.BigEndian.Uint64(run[8:16])))
			}
			for len(run) > 0 {
				n := s.fitting(run)
				if n == 0 {
					if err := s.rotate(); err != nil {
						return s.fail(err)
					}
					continue
				}
				if err := s.write(run[:n]); err != nil {
					return s.fail(err)
				}
				run = run[n:]
			}
		}
	}
	if err := s.flushBuf(); err != nil {
		return s.fail(err)
	}
	if !s.o.NoSync {
		if err := s.f.Sync(); err != nil {
			return s.fail(fmt.Errorf("fsync spool segment: %w", err))
		}
	}
	s.mu.Lock()
	s.segSizes[s.seg] = s.size
	if s.oldest.IsZero() && !first.IsZero() {
		s.oldest = first
	}
	s.synced = Pos{Seg: s.seg, Off: s.size}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// fitting returns how many bytes of whole records at the start of run fit
// in the current segment: 0 when the segment must rotate first, and at
// least one record in an empty segment (a record larger than a segment
// gets a segment of its own).
func (s *Spool) fitting(run []byte) int {
	if s.size+int64(len(run)) <= s.o.SegmentBytes {
		return len(run)
	}
	off := 0
	for off < len(run) {
		l := headerLen + int(binary.BigEndian.Uint32(run[off:]))
		if s.size+int64(off+l) > s.o.SegmentBytes {
			break
		}
		off += l
	}
	if off == 0 && s.size == 0 {
		off = headerLen + int(binary.BigEndian.Uint32(run))
	}
	return off
}

// write appends b to the segment: small pieces are gathered into one
// write, large ones are written as they are.
func (s *Spool) write(b []byte) error {
	s.size += int64(len(b))
	if len(b) < 64<<10 {
		s.buf = append(s.buf, b...)
		if len(s.buf) < 1<<20 {
			return nil
		}
		return s.flushBuf()
	}
	if err := s.flushBuf(); err != nil {
		return err
	}
	if _, err := s.f.Write(b); err != nil {
		return fmt.Errorf("write spool segment: %w", err)
	}
	return nil
}

// flushBuf writes the gathered small runs.
func (s *Spool) flushBuf() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.f.Write(s.buf)
	s.buf = s.buf[:0]
	if err != nil {
		return fmt.Errorf("write spool segment: %w", err)
	}
	return nil
}

func (s *Spool) fail(err error) error {
	s.log.Error("spool write failed; appends refused until restart", "dir", s.o.Dir, "err", err)
	s.mu.Lock()
	s.writeErr = err
	s.mu.Unlock()
	return err
}

// rotate flushes and fsyncs the current segment and starts the next.
func (s *Spool) rotate() error {
	if err := s.flushBuf(); err != nil {
		return err
	}
	if !s.o.NoSync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("fsync spool segment: %w", err)
		}
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close spool segment: %w", err)
	}
	s.mu.Lock()
	s.segSizes[s.seg] = s.size
	// Readers may move past the finished segment.
	s.synced = Pos{Seg: s.seg, Off: s.size}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	f, err := os.OpenFile(s.segPath(s.seg+1), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	s.seg++
	s.f, s.size = f, 0
	s.mu.Lock()
	s.segSizes[s.seg] = 0
	s.mu.Unlock()
	return s.syncDir()
}

// Bytes is the spooled, not yet committed size.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Oldest is the append time of the oldest uncommitted record (zero when
// the spool is empty).
func (s *Spool) Oldest() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.committed == s.synced {
		return time.Time{}
	}
	return s.oldest
}

// Empty reports whether every durable record is committed.
func (s *Spool) Empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed == s.synced
}

// Corrupt counts records skipped by the reader because their checksum did
// not match.
func (s *Spool) Corrupt() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.corrupt
}

// Commit records that everything before p is delivered: the checkpoint
// moves, finished segments are deleted and quota is freed.
func (s *Spool) Commit(p Pos) error {
	s.mu.Lock()
	if !s.committed.Less(p) {
		s.mu.Unlock()
		return nil
	}
	old := s.committed
	var freed int64
	var drop []uint64
	for n, sz := range s.segSizes {
		switch {
		case n < old.Seg || n > p.Seg:
		case n == old.Seg && n == p.Seg:
			freed += p.Off - old.Off
		case n == old.Seg:
			freed += sz - old.Off
		case n == p.Seg:
			freed += p.Off
		default:
			freed += sz
		}
		if n < p.Seg {
			drop = append(drop, n)
		}
	}
	for _, n := range drop {
		delete(s.segSizes, n)
	}
	s.committed = p
	s.used -= freed
	s.cond.Broadcast()
	empty := s.committed == s.synced
	s.mu.Unlock()

	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	if err := s.writeCheckpoint(p); err != nil {
		return fmt.Errorf("write spool checkpoint: %w", err)
	}
	for _, n := range drop {
		if n == s.atSeg && s.atFile != nil {
			s.atFile.Close()
			s.atFile = nil
		}
		if err := os.Remove(s.segPath(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove delivered spool segment", "segment", segName(n), "err", err)
		}
	}
	var oldest time.Time
	if !empty {
		oldest = s.appendTimeAt(p)
		if oldest.IsZero() { // p is at the end of a finished segment
			oldest = s.appendTimeAt(Pos{Seg: p.Seg + 1})
		}
	}
	s.mu.Lock()
	s.oldest = oldest
	s.mu.Unlock()
	return nil
}

// writeCheckpoint overwrites the 20-byte checkpoint in place: one pwrite
// to a file kept open, where a temporary file and a rename cost an open,
// a close and a journalled rename per commit. A write this small, inside
// one page, is never seen half done after a process crash; after a power
// loss the checkpoint (never fsynced, like before) may be old or, torn,
// fail its CRC, and the spool then replays from its oldest segment:
// duplicates, no loss.
func (s *Spool) writeCheckpoint(p Pos) error {
	if s.cpFile == nil {
		f, err := os.OpenFile(filepath.Join(s.o.Dir, "checkpoint"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		s.cpFile = f
	}
	var b [20]byte
	binary.BigEndian.PutUint64(b[0:], p.Seg)
	binary.BigEndian.PutUint64(b[8:], uint64(p.Off))
	binary.BigEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
	_, err := s.cpFile.WriteAt(b[:], 0)
	if s.cpClosed {
		if cerr := s.cpFile.Close(); err == nil {
			err = cerr
		}
		s.cpFile = nil
	}
	return err
}

// Close stops the writer after writing what was queued.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	s.cpClosed = true
	var err error
	if s.cpFile != nil {
		err = s.cpFile.Close()
		s.cpFile = nil
	}
	if s.atFile != nil {
		s.atFile.Close()
		s.atFile = nil
	}
	return err
}
