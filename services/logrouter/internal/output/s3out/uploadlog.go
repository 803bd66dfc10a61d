package s3out

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// uploadLog notes every object the sink uploads — its key prefix and the
// spool positions of its first and last record — until the spool is
// committed past the last one. The spool commit trails the uploads: while
// an object of one prefix is still open, objects of other prefixes are
// uploaded but cannot be committed. A logrouter that dies then replays
// their records after the restart; grouped anew, they could land in
// objects of other names and be stored twice. Records the log shows
// uploaded are skipped instead. (The one window left is a crash between
// an upload and its note; the object's name, from its first record's
// position, then makes the upload repeat onto the same object.)
//
// The file is NDJSON, one {"k","f","l"} object per upload, appended
// without fsync (like the spool checkpoint: a process crash keeps it); a
// torn last line is ignored. It is rewritten when most of it is obsolete.
type uploadLog struct {
	path string
	f    *os.File
	live []upload
	// replay are the uploads noted before this process started, by key
	// prefix: records found in them are skipped. Nil once all are
	// committed.
	replay   map[string][]upload
	obsolete int // lines in the file no longer live
}

type upload struct {
	Key   string   `json:"k"`
	First [2]int64 `json:"f"`
	Last  [2]int64 `json:"l"`
}

func pos(p [2]int64) spool.Pos { return spool.Pos{Seg: uint64(p[0]), Off: p[1]} }

func openUploadLog(path string) (*uploadLog, error) {
	l := &uploadLog{path: path}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read s3 upload log: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var u upload
		if json.Unmarshal(sc.Bytes(), &u) != nil {
			continue // a line torn by a crash
		}
		l.live = append(l.live, u)
		if l.replay == nil {
			l.replay = map[string][]upload{}
		}
		l.replay[u.Key] = append(l.replay[u.Key], u)
	}
	if err := l.rewrite(); err != nil {
		return nil, err
	}
	return l, nil
}

// uploaded reports whether the record at p with key prefix key went into
// an object uploaded before this process started.
func (l *uploadLog) uploaded(key string, p spool.Pos) bool {
	if l == nil || l.replay == nil {
		return false
	}
	for _, u := range l.replay[key] {
		if !p.Less(pos(u.First)) && !pos(u.Last).Less(p) {
			return true
		}
	}
	return false
}

// note records an uploaded object.
func (l *uploadLog) note(key string, first, last spool.Pos) error {
	if l == nil {
		return nil
	}
	u := upload{Key: key, First: [2]int64{int64(first.Seg), first.Off}, Last: [2]int64{int64(last.Seg), last.Off}}
	b, _ := json.Marshal(u)
	l.live = append(l.live, u)
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write s3 upload log: %w", err)
	}
	return nil
}

// prune forgets the uploads whose records are all before committed (the
// spool will not replay them again).
func (l *uploadLog) prune(committed spool.Pos) error {
	if l == nil {
		return nil
	}
	keep := l.live[:0]
	for _, u := range l.live {
		if !pos(u.Last).Less(committed) {
			keep = append(keep, u)
		}
	}
	l.obsolete += len(l.live) - len(keep)
	clear(l.live[len(keep):])
	l.live = keep
	if l.replay != nil {
		n := 0
		for k, us := range l.replay {
			left := us[:0]
			for _, u := range us {
				if !pos(u.Last).Less(committed) {
					left = append(left, u)
				}
			}
			if len(left) == 0 {
				delete(l.replay, k)
			} else {
				l.replay[k] = left
				n += len(left)
			}
		}
		if n == 0 {
			l.replay = nil
		}
	}
	if l.obsolete > 64 && l.obsolete > len(l.live) || l.obsolete > 0 && len(l.live) == 0 {
		return l.rewrite()
	}
	return nil
}

// rewrite replaces the file with the live uploads.
func (l *uploadLog) rewrite() error {
	var b []byte
	for _, u := range l.live {
		j, _ := json.Marshal(u)
		b = append(append(b, j...), '\n')
	}
	tmp := l.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write s3 upload log: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("write s3 upload log: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open s3 upload log: %w", err)
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.obsolete = f, 0
	return nil
}

func (l *uploadLog) close() error {
	if l == nil || l.f == nil {
		return nil
	}
	return l.f.Close()
}
