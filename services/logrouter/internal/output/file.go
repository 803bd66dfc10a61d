package output

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

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
type File struct {
	Path     string
	MaxBytes int64
	MaxFiles int
	// Sync fsyncs after every batch (the spool already makes delivery
	// safe against process crashes; this also covers power loss).
	Sync     bool
	Format   event.Format
	Counters *Counters

	f    *os.File
	size int64
	buf  []byte
	r    event.Renderer
}

func (s *File) open() error {
	if s.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(s.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	s.f, s.size = f, fi.Size()
	return nil
}

func (s *File) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	s.f = nil
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
	s.buf = s.buf[:0]
	var bytes int64
	write := func() error {
		if len(s.buf) == 0 {
			return nil
		}
		n, err := s.f.Write(s.buf)
		s.size += int64(n)
		bytes += int64(n)
		s.buf = s.buf[:0]
		if err != nil {
			return fmt.Errorf("write log file: %w", err)
		}
		return nil
	}
	for i := range evs {
		before := len(s.buf)
		s.buf = s.r.AppendLine(s.buf, &evs[i], s.Format)
		if s.MaxBytes > 0 && s.size+int64(len(s.buf)) > s.MaxBytes && s.size+int64(before) > 0 {
			line := append([]byte(nil), s.buf[before:]...)
			s.buf = s.buf[:before]
			if err := write(); err != nil {
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
	if err := write(); err != nil {
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
	err := s.f.Close()
	s.f = nil
	return err
}
