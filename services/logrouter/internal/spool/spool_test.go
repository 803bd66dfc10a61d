package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func open(t *testing.T, dir string, o Options) *Spool {
	t.Helper()
	o.Dir = dir
	s, err := Open(o)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func appendWait(t *testing.T, s *Spool, recs ...string) {
	t.Helper()
	bs := make([][]byte, len(recs))
	for i, r := range recs {
		bs[i] = []byte(r)
	}
	c, err := s.Append(context.Background(), bs)
	require.NoError(t, err)
	require.NoError(t, c.Wait(context.Background()))
}

func readAll(t *testing.T, r *Reader) ([]string, Pos) {
	t.Helper()
	var out []string
	var end Pos
	for {
		b, err := r.Next(context.Background(), 100, 1<<20, 0)
		require.NoError(t, err)
		end = b.End
		if len(b.Records) == 0 {
			if !r.Pending() {
				return out, end
			}
			continue
		}
		for _, rec := range b.Records {
			out = append(out, string(rec))
		}
	}
}

func TestAppendReadCommitAcrossSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 100, MaxBytes: 1 << 20})
	var want []string
	for i := 0; i < 50; i++ {
		r := fmt.Sprintf("record-%03d", i)
		want = append(want, r)
		appendWait(t, s, r)
	}
	segs, err := s.listSegments()
	require.NoError(t, err)
	require.Greater(t, len(segs), 5, "small segments rotate")
	r := s.NewReader()
	got, end := readAll(t, r)
	require.Equal(t, want, got)
	require.False(t, s.Empty())
	require.False(t, s.Oldest().IsZero())
	require.NoError(t, s.Commit(end))
	require.True(t, s.Empty())
	require.Zero(t, s.Bytes())
	require.True(t, s.Oldest().IsZero())
	segs, err = s.listSegments()
	require.NoError(t, err)
	require.Len(t, segs, 1, "delivered segments are deleted")
}

func TestReopenResumesAtCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 64})
	appendWait(t, s, "a1", "a2", "a3")
	r := s.NewReader()
	b, err := r.Next(context.Background(), 2, 1<<20, 0)
	require.NoError(t, err)
	require.Len(t, b.Records, 2)
	require.NoError(t, s.Commit(b.End))
	appendWait(t, s, "b1")
	r.Close()
	require.NoError(t, s.Close())

	s2 := open(t, dir, Options{SegmentBytes: 64})
	got, _ := readAll(t, s2.NewReader())
	require.Equal(t, []string{"a3", "b1"}, got)
	require.Equal(t, int64(2*headerLen+4), s2.Bytes())
}

func TestTornTailIsCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Options{})
	appendWait(t, s, "one", "two", "three")
	require.NoError(t, s.Close())
	segs, _ := s.listSegments()
	path := filepath.Join(dir, segName(segs[len(segs)-1]))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	orig := fi.Size()

	for _, tc := range []struct {
		name string
		mut  func(t *testing.T)
		want []string
	}{
		{"half a record", func(t *testing.T) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			_, err = f.Write([]byte{0, 0, 0, 9, 1, 2})
			require.NoError(t, err)
			f.Close()
		}, []string{"one", "two", "three"}},
		{"flipped byte in the last record", func(t *testing.T) {
			require.NoError(t, os.Truncate(path, orig))
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			require.NoError(t, err)
			_, err = f.WriteAt([]byte{'X'}, orig-1)
			require.NoError(t, err)
			f.Close()
		}, []string{"one", "two"}},
	} {
		tc.mut(t)
		s2, err := Open(Options{Dir: dir})
		require.NoError(t, err, tc.name)
		got, _ := readAll(t, s2.NewReader())
		require.Equal(t, tc.want, got, tc.name)
		// A fresh append after the cut is readable.
		appendWait(t, s2, "after")
		require.NoError(t, s2.Close())
		s3, err := Open(Options{Dir: dir})
		require.NoError(t, err)
		got, _ = readAll(t, s3.NewReader())
		require.Equal(t, append(tc.want, "after"), got, tc.name)
		require.NoError(t, s3.Close())
	}
}

func TestQuotaBlocksThenResumes(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Options{MaxBytes: 3 * (headerLen + 10)})
	rec := []byte("0123456789")
	for i := 0; i < 3; i++ {
		appendWait(t, s, string(rec))
	}
	require.True(t, s.Full())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Append(ctx, [][]byte{rec})
	require.ErrorIs(t, err, context.DeadlineExceeded, "a full spool blocks the appender")

	done := make(chan error, 1)
	go func() {
		c, err := s.Append(context.Background(), [][]byte{rec})
		if err == nil {
			err = c.Wait(context.Background())
		}
		done <- err
	}()
	r := s.NewReader()
	b, err := r.Next(context.Background(), 1, 1<<20, 0)
	require.NoError(t, err)
	require.NoError(t, s.Commit(b.End))
	require.NoError(t, <-done, "committing frees room for the blocked append")
}

func TestDropWhenFull(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Options{MaxBytes: headerLen + 4, DropWhenFull: true})
	appendWait(t, s, "abcd")
	_, err := s.Append(context.Background(), [][]byte{[]byte("x")})
	require.ErrorIs(t, err, ErrFull)
	_, err = s.Append(context.Background(), [][]byte{make([]byte, 100)})
	require.ErrorIs(t, err, ErrTooLarge)
}

func TestReaderWaitsForAppend(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Options{})
	r := s.NewReader()
	got := make(chan string, 1)
	go func() {
		b, err := r.Next(context.Background(), 10, 1<<20, time.Minute)
		if err == nil && len(b.Records) > 0 {
			got <- string(b.Records[0])
		}
		close(got)
	}()
	appendWait(t, s, "hello")
	require.Equal(t, "hello", <-got)
}

// A checksum failure below the durable mark (disk corruption in a finished
// segment) skips the rest of that segment, counts it, and goes on.
func TestReaderSkipsCorruptSegmentRest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 3 * (headerLen + 5)})
	for i := 0; i < 9; i++ {
		appendWait(t, s, fmt.Sprintf("rec-%d", i)) // 3 records per segment
	}
	segs, err := s.listSegments()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(segs), 3)
	// Corrupt the second record of the first segment.
	f, err := os.OpenFile(filepath.Join(dir, segName(segs[0])), os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{'#'}, 2*headerLen+5+2)
	require.NoError(t, err)
	f.Close()
	got, _ := readAll(t, s.NewReader())
	require.Equal(t, []string{"rec-0", "rec-3", "rec-4", "rec-5", "rec-6", "rec-7", "rec-8"}, got)
	require.Equal(t, int64(1), s.Corrupt())
}

// TestAppendFramedRuns: runs of several framed records — large and
// small, split across segment boundaries, with a record larger than a
// segment — are read back whole and in order, and reopen cleanly.
func TestAppendFramedRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 24})
	now := time.Unix(1700000000, 0)
	var want []string
	var runs [][]byte
	for r := 0; r < 8; r++ {
		var run []byte
		for i := 0; i < 10*r+1; i++ {
			rec := fmt.Sprintf("run-%d-rec-%03d-%s", r, i, strings.Repeat("x", (r*37+i*11)%300))
			if r == 5 && i == 3 {
				rec += strings.Repeat("big", 3000) // larger than a segment
			}
			want = append(want, rec)
			var start int
			run, start = BeginFrame(run)
			run = append(run, rec...)
			EndFrame(run, start, now)
		}
		runs = append(runs, run)
	}
	// One large run (written as it is) among small ones (gathered).
	var big []byte
	for i := 0; i < 400; i++ {
		rec := fmt.Sprintf("big-run-%04d-%s", i, strings.Repeat("y", 200))
		want = append(want, rec)
		big = Frame(big, now, []byte(rec))
	}
	require.Greater(t, len(big), 64<<10)
	runs = append(runs, big)
	c, err := s.AppendFramed(context.Background(), runs[:4])
	require.NoError(t, err)
	c2, err := s.AppendFramed(context.Background(), runs[4:])
	require.NoError(t, err)
	require.NoError(t, c.Wait(context.Background()))
	require.NoError(t, c2.Wait(context.Background()))
	require.Equal(t, now, s.Oldest())

	got, _ := readAll(t, s.NewReader())
	require.Equal(t, want, got)
	require.Zero(t, s.Corrupt())
	segs, err := s.listSegments()
	require.NoError(t, err)
	require.Greater(t, len(segs), 10)
	for _, n := range segs[:len(segs)-1] {
		fi, err := os.Stat(s.segPath(n))
		require.NoError(t, err)
		if fi.Size() > 4096 {
			// Only a segment holding the one oversized record exceeds the limit.
			require.Less(t, fi.Size(), int64(4096+9100+headerLen))
		}
	}
	require.NoError(t, s.Close())
	s2 := open(t, dir, Options{SegmentBytes: 4096, MaxBytes: 1 << 24})
	got, _ = readAll(t, s2.NewReader())
	require.Equal(t, want, got)
}

func TestAppendFramedRefusesUnframed(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Options{})
	good := Frame(nil, time.Now(), []byte("ok"))
	for _, run := range [][]byte{[]byte("not framed"), good[:len(good)-1], append(bytes.Clone(good), 1, 2, 3)} {
		_, err := s.AppendFramed(context.Background(), [][]byte{good, run})
		require.Error(t, err)
	}
	require.Zero(t, s.Bytes())
}

// TestReaderOwned: records of an owned reader stay intact after later
// reads; batches of few records read about what they need, and a record
// larger than the estimate is still read whole.
func TestReaderOwned(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir(), Options{SegmentBytes: 1 << 20, MaxBytes: 1 << 24})
	var want []string
	for i := 0; i < 300; i++ {
		rec := fmt.Sprintf("rec-%03d-%s", i, strings.Repeat("z", i%40))
		if i == 250 {
			rec += strings.Repeat("large", 20000)
		}
		want = append(want, rec)
	}
	for i := 0; i < len(want); i += 50 {
		appendWait(t, s, want[i:i+50]...)
	}
	r := s.NewReader()
	r.SetOwned(true)
	defer r.Close()
	var kept [][]byte
	for r.Pending() {
		b, err := r.Next(context.Background(), 7, 1<<20, 0)
		require.NoError(t, err)
		require.LessOrEqual(t, len(b.Records), 7)
		kept = append(kept, b.Records...)
	}
	require.Len(t, kept, len(want))
	for i := range want {
		require.Equal(t, want[i], string(kept[i]))
	}
}

// TestIDSurvivesRestart: a spool keeps the ID it was given when first
// opened; another spool gets another.
func TestIDSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, NoSync: true})
	require.NoError(t, err)
	id := s.ID()
	require.Regexp(t, `^[0-9a-f]{16}$`, id)
	require.NoError(t, s.Close())
	s, err = Open(Options{Dir: dir, NoSync: true})
	require.NoError(t, err)
	require.Equal(t, id, s.ID())
	require.NoError(t, s.Close())
	other, err := Open(Options{Dir: t.TempDir(), NoSync: true})
	require.NoError(t, err)
	defer other.Close()
	require.NotEqual(t, id, other.ID())
}

// copyDir copies the spool's files as a crash would leave them: what the
// process wrote, without anything Close would add.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, err := os.ReadDir(from)
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), b, 0o644))
	}
	return to
}

func TestCheckpointRewrittenInPlaceAfterEveryCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := time.Unix(1_700_000_000, 0)
	s := open(t, dir, Options{SegmentBytes: 3 * (headerLen + 3), NoSync: true, Now: func() time.Time { return clock }})
	var recs []string
	times := map[string]time.Time{}
	for i := 0; i < 10; i++ {
		r := fmt.Sprintf("r%02d", i)
		recs = append(recs, r)
		times[r] = clock
		appendWait(t, s, r)
		clock = clock.Add(time.Second)
	}
	r := s.NewReader()
	for i := 0; i < len(recs); i++ {
		b, err := r.Next(context.Background(), 1, 1<<20, 0)
		require.NoError(t, err)
		require.Equal(t, []string{recs[i]}, []string{string(b.Records[0])})
		require.NoError(t, s.Commit(b.End))
		// The oldest record's append time follows the commit across
		// segments (the cached segment handle moves with it).
		if i+1 < len(recs) {
			require.Equal(t, times[recs[i+1]], s.Oldest(), "after committing %s", recs[i])
		} else {
			require.True(t, s.Oldest().IsZero())
		}
		// A crash now: a copy of the directory resumes after the commit.
		crashed := open(t, copyDir(t, dir), Options{SegmentBytes: 3 * (headerLen + 3), NoSync: true})
		got, _ := readAll(t, crashed.NewReader())
		require.Equal(t, recs[i+1:], append([]string{}, got...), "resume after committing %s", recs[i])
		require.NoError(t, crashed.Close())
	}
	_, err := os.Stat(filepath.Join(dir, "checkpoint.tmp"))
	require.True(t, os.IsNotExist(err), "no temporary file")
}

func TestBadCheckpointReplaysEverythingKept(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	appendWait(t, s, "a", "b", "c")
	r := s.NewReader()
	b, err := r.Next(context.Background(), 2, 1<<20, 0)
	require.NoError(t, err)
	require.NoError(t, s.Commit(b.End))
	r.Close()
	require.NoError(t, s.Close())
	// A torn checkpoint (its CRC fails), and the temporary file an older
	// version may have left.
	cp := filepath.Join(dir, "checkpoint")
	raw, err := os.ReadFile(cp)
	require.NoError(t, err)
	raw[3] ^= 0xff
	require.NoError(t, os.WriteFile(cp, raw, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "checkpoint.tmp"), raw, 0o644))

	s2 := open(t, dir, Options{NoSync: true})
	r2 := s2.NewReader()
	first, err := r2.Next(context.Background(), 1, 1<<20, 0)
	require.NoError(t, err)
	firstRec := string(first.Records[0]) // the reader reuses its buffer
	got, end := readAll(t, r2)
	require.Equal(t, []string{"a", "b", "c"}, append([]string{firstRec}, got...), "duplicates, no loss")
	_, err = os.Stat(filepath.Join(dir, "checkpoint.tmp"))
	require.True(t, os.IsNotExist(err), "the leftover temporary file is removed")
	require.NoError(t, s2.Commit(first.End))
	r2.Close()
	require.NoError(t, s2.Close())
	require.NoError(t, s2.Commit(end), "a commit after Close still writes the checkpoint")
	s3 := open(t, dir, Options{NoSync: true})
	got, _ = readAll(t, s3.NewReader())
	require.Empty(t, got)
}

func TestOldestAfterCommittingTheEndOfASegment(t *testing.T) {
	t.Parallel()
	clock := time.Unix(1_700_000_000, 0)
	s := open(t, t.TempDir(), Options{SegmentBytes: 3 * (headerLen + 2), NoSync: true, Now: func() time.Time { return clock }})
	for _, r := range []string{"r0", "r1", "r2"} {
		appendWait(t, s, r)
		clock = clock.Add(time.Second)
	}
	r := s.NewReader()
	got, end := readAll(t, r) // the end of the first segment, the last one yet
	require.Equal(t, []string{"r0", "r1", "r2"}, got)
	appendWait(t, s, "r3") // starts the second segment
	require.NoError(t, s.Commit(end))
	require.Equal(t, clock, s.Oldest(), "r3, the first record of the next segment")
}
