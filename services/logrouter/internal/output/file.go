package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// Writer is the stdout sink: lines written to W in the output's format.
type Writer struct {
	W        io.Writer
	Format   event.Format
	Counters *Counters
	mu       sync.Mutex
	buf      []byte
	r        event.Renderer
}

// Deliver writes every event.
func (w *Writer) Deliver(_ context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = w.buf[:0]
	for i := range evs {
		w.buf = w.r.AppendLine(w.buf, &evs[i], w.Format)
	}
	if _, err := w.W.Write(w.buf); err != nil {
		return spool.Pos{}, fmt.Errorf("write: %w", err)
	}
	w.Counters.ProcRecords.Add(int64(len(evs)))
	w.Counters.ProcBytes.Add(int64(len(w.buf)))
	return end, nil
}

// Flush has nothing buffered.
func (w *Writer) Flush(context.Context, bool) (spool.Pos, bool, error) {
	return spool.Pos{}, false, nil
}

// Close does nothing (stdout stays open).
func (w *Writer) Close() error { return nil }

// File is the rotating NDJSON file sink. When the file reaches MaxBytes
// it is renamed to path.1 (path.1 to path.2, …) and at most MaxFiles old
// files are kept.
//
// The sink writes at its own offsets (pwrite), not in O_APPEND mode, so a
// batch retried after a failed write overwrites what it left instead of
// appending it twice. It expects to be the file's only writer; when the
// file's size changes under it (logrotate's copytruncate, say), it logs
// that and goes on at the file's new end.
//
// With DirectIO (Linux), whole 4 KiB blocks are written with O_DIRECT:
// from the sink's buffer to the disk, without copying them into the page
// cache. A log file is written once and rarely read back, so caching it
// only evicts the host's other data; and growing the page cache by
// everything written costs more CPU than writing itself (on some virtual
// machines several times more, see docs/benchmarks.md). The last, partial
// block is written through the page cache, so readers (tail -f) see every
// complete line at once, and rewritten whole by the next batch. When the
// file system refuses O_DIRECT (tmpfs on older kernels, some network and
// FUSE file systems), the sink logs it and writes through the page cache.
type File struct {
	Path     string
	MaxBytes int64
	MaxFiles int
	// Sync fsyncs after every batch (the spool already makes delivery
	// safe against process crashes; this also covers power loss).
	Sync     bool
	DirectIO bool
	Format   event.Format
	Counters *Counters
	Log      *slog.Logger

	f    *os.File // written at explicit offsets: the partial block, or everything without direct I/O
	df   *os.File // the same file opened O_DIRECT; nil without direct I/O
	size int64    // the file's size as written
	// buf holds the rendered lines. With direct I/O, buf[:keep] is the
	// file's partial last block (from offset base, a block boundary) and
	// buf's memory is block aligned.
	buf  []byte
	base int64
	keep int
	r    event.Renderer
}

// errNoDirectIO is openDirect's answer where direct I/O is not
// implemented (outside Linux).
var errNoDirectIO = errors.New("direct I/O is implemented for Linux only")

// writeDirect is the O_DIRECT write (a variable for the tests of a
// refusal).
var writeDirect = (*os.File).WriteAt

// blockSize is the unit of direct I/O: a multiple of every common logical
// block size (512 or 4096 bytes).
const blockSize = 4096

func (s *File) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *File) open() error {
	if s.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(s.Path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	s.f, s.df = f, nil
	if s.DirectIO && fi.Mode().IsRegular() {
		switch df, err := openDirect(s.Path); {
		case err == nil:
			s.df = df
		case errors.Is(err, errNoDirectIO): // not on this OS: the page cache, quietly
		default:
			s.log().Warn("log file: direct I/O refused, writing through the page cache", "path", s.Path, "err", err)
		}
	}
	if err := s.resync(fi.Size()); err != nil {
		s.Close()
		return err
	}
	return nil
}

// resync starts writing at the file's end, size: reads its partial last
// block for direct I/O, drops whatever buf held.
func (s *File) resync(size int64) error {
	s.size, s.keep, s.buf = size, 0, s.buf[:0]
	if s.df == nil {
		return nil
	}
	s.base = size &^ (blockSize - 1)
	n := int(size - s.base)
	s.buf = alignedBuf(s.buf, n)[:n]
	if n > 0 {
		if _, err := s.f.ReadAt(s.buf, s.base); err != nil {
			return fmt.Errorf("read log file's last block: %w", err)
		}
	}
	s.keep = n
	return nil
}

// alignedBuf returns b when its memory is block aligned with room for n
// bytes, else a new aligned buffer holding b's bytes.
func alignedBuf(b []byte, n int) []byte {
	if cap(b) >= n && cap(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%blockSize == 0 {
		return b
	}
	size := max(n, 2*cap(b), 64<<10)
	raw := make([]byte, size+blockSize)
	off := (blockSize - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))%blockSize)) % blockSize
	nb := raw[off : off : off+size]
	return append(nb, b...)
}

// write writes the rendered lines in buf.
func (s *File) write() (int64, error) {
	pending := len(s.buf) - s.keep
	if pending == 0 {
		return 0, nil
	}
	if s.df == nil {
		if _, err := s.f.WriteAt(s.buf, s.size); err != nil {
			return 0, s.failed(err)
		}
		s.size += int64(pending)
		s.buf = s.buf[:0]
		return int64(pending), nil
	}
	s.buf = alignedBuf(s.buf, len(s.buf)) // the renderer may have grown it
	full := len(s.buf) &^ (blockSize - 1)
	if full > 0 {
		if _, err := writeDirect(s.df, s.buf[:full], s.base); err != nil {
			if !errors.Is(err, syscall.EINVAL) {
				return 0, s.failed(err)
			}
			// Refused after all: from here on through the page cache.
			s.log().Warn("log file: direct I/O write refused, writing through the page cache", "path", s.Path, "err", err)
			s.df.Close()
			s.df = nil
			if _, err := s.f.WriteAt(s.buf, s.base); err != nil {
				return 0, s.failed(err)
			}
			s.size += int64(pending)
			s.buf, s.keep = s.buf[:0], 0
			return int64(pending), nil
		}
	}
	if tail := s.buf[full:]; len(tail) > 0 {
		if _, err := s.f.WriteAt(tail, s.base+int64(full)); err != nil {
			return 0, s.failed(err)
		}
	}
	s.size += int64(pending)
	n := copy(s.buf, s.buf[full:])
	s.buf, s.keep, s.base = s.buf[:n], n, s.base+int64(full)
	return int64(pending), nil
}

// failed undoes a write that failed part way: the file is cut back to
// what was written before, so the batch, retried, is written again from
// there (not after a partial line, not twice).
func (s *File) failed(err error) error {
	if s.df != nil {
		s.buf = s.buf[:s.keep]
	} else {
		s.buf, s.keep = s.buf[:0], 0
	}
	_ = s.f.Truncate(s.size)
	return fmt.Errorf("write log file: %w", err)
}

func (s *File) rotate() error {
	if err := s.Close(); err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	if s.MaxFiles <= 0 {
		return os.Remove(s.Path)
	}
	for i := s.MaxFiles - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", s.Path, i), fmt.Sprintf("%s.%d", s.Path, i+1))
	}
	if err := os.Rename(s.Path, s.Path+".1"); err != nil {
		return fmt.Errorf("rotate log file: %w", err)
	}
	return nil
}

// Deliver appends every event, rotating between events when full.
func (s *File) Deliver(_ context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error) {
	if err := s.open(); err != nil {
		return spool.Pos{}, err
	}
	fi, err := s.f.Stat()
	if err != nil {
		return spool.Pos{}, fmt.Errorf("stat log file: %w", err)
	}
	if fi.Size() != s.size {
		s.log().Warn("log file changed size under the output (truncated or written by another process); writing at its end",
			"path", s.Path, "size", fi.Size(), "expected", s.size)
		if err := s.resync(fi.Size()); err != nil {
			return spool.Pos{}, err
		}
	}
	var bytes int64
	for i := range evs {
		before := len(s.buf)
		s.buf = s.r.AppendLine(s.buf, &evs[i], s.Format)
		if s.MaxBytes > 0 && s.size+int64(len(s.buf)-s.keep) > s.MaxBytes && s.size+int64(before-s.keep) > 0 {
			line := append([]byte(nil), s.buf[before:]...)
			s.buf = s.buf[:before]
			n, err := s.write()
			bytes += n
			if err != nil {
				return spool.Pos{}, err
			}
			if err := s.rotate(); err != nil {
				return spool.Pos{}, err
			}
			if err := s.open(); err != nil {
				return spool.Pos{}, err
			}
			s.buf = append(s.buf, line...)
		}
	}
	n, err := s.write()
	bytes += n
	if err != nil {
		return spool.Pos{}, err
	}
	if s.Sync {
		if err := s.f.Sync(); err != nil {
			return spool.Pos{}, fmt.Errorf("fsync log file: %w", err)
		}
	}
	s.Counters.ProcRecords.Add(int64(len(evs)))
	s.Counters.ProcBytes.Add(bytes)
	return end, nil
}

// Flush has nothing buffered.
func (s *File) Flush(context.Context, bool) (spool.Pos, bool, error) { return spool.Pos{}, false, nil }

// Close closes the file.
func (s *File) Close() error {
	if s.f == nil {
		return nil
	}
	if s.df != nil {
		s.df.Close()
		s.df = nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
