package output

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// rawFile is a File sink writing format raw to path, logging into logs.
func rawFile(path string, direct bool, c *Counters) (*File, *bytes.Buffer) {
	logs := &bytes.Buffer{}
	return &File{Path: path, DirectIO: direct, Format: event.FormatRaw, Counters: c, Log: slog.New(slog.NewJSONHandler(logs, nil))}, logs
}

// deliverRaw delivers lines (format raw: the line and a newline).
func deliverRaw(t *testing.T, f *File, lines []string) {
	t.Helper()
	evs := make([]event.Event, len(lines))
	for i, l := range lines {
		evs[i] = event.Event{Time: time.Now(), Log: l}
	}
	_, err := f.Deliver(context.Background(), evs, spool.Pos{})
	require.NoError(t, err)
}

// directWorks reports whether dir's file system takes O_DIRECT.
func directWorks(t *testing.T, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, "probe")
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	defer os.Remove(p)
	f, err := openDirect(p)
	if err != nil {
		t.Logf("no direct I/O here: %v", err)
		return false
	}
	f.Close()
	return true
}

// TestFileContentAcrossBatchesAndRestarts: lines of every length (some
// longer than a block) in batches of every size come out exactly, with
// and without direct I/O, across a restart that finds a partial block.
func TestFileContentAcrossBatchesAndRestarts(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("directIO=%v", direct), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "x.ndjson")
			rng := rand.New(rand.NewPCG(1, 2))
			var want bytes.Buffer
			n := 0
			for restart := 0; restart < 3; restart++ {
				c := &Counters{}
				f, logs := rawFile(path, direct, c)
				var wrote int64
				for batch := 0; batch < 40; batch++ {
					lines := make([]string, 1+rng.IntN(30))
					for i := range lines {
						size := rng.IntN(300)
						if rng.IntN(10) == 0 {
							size = rng.IntN(3 * blockSize)
						}
						lines[i] = fmt.Sprintf("%06d %s", n, strings.Repeat(string(rune('a'+n%26)), size))
						n++
						want.WriteString(lines[i] + "\n")
						wrote += int64(len(lines[i]) + 1)
					}
					deliverRaw(t, f, lines)
					if direct && directWorks(t, dir) {
						require.NotNil(t, f.df, "writing with O_DIRECT")
					}
					got, err := os.ReadFile(path)
					require.NoError(t, err)
					require.Equal(t, want.Len(), len(got), "restart %d batch %d", restart, batch)
					require.True(t, bytes.Equal(want.Bytes(), got), "restart %d batch %d: content differs", restart, batch)
				}
				require.Equal(t, wrote, c.ProcBytes.Load(), "bytes counted once, not per rewrite of the last block")
				require.Empty(t, logs.String(), "the sink knows the size it wrote")
				require.NoError(t, f.Close())
			}
		})
	}
}

func TestFileTruncatedUnderIt(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("directIO=%v", direct), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "x.ndjson")
			f, logs := rawFile(path, direct, &Counters{})
			defer f.Close()
			deliverRaw(t, f, []string{"one", strings.Repeat("x", 5000), "two"})
			// logrotate's copytruncate
			require.NoError(t, os.Truncate(path, 0))
			deliverRaw(t, f, []string{"three"})
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, "three\n", string(got), "written at the new end, no hole")
			require.Contains(t, logs.String(), "log file changed size under the output")
		})
	}
}

// TestFileDirectIORefused: where O_DIRECT cannot be opened the sink says
// so and writes through the page cache. Not parallel: it replaces
// openDirect.
func TestFileDirectIORefused(t *testing.T) {
	orig := openDirect
	defer func() { openDirect = orig }()
	openDirect = func(string) (*os.File, error) { return nil, fmt.Errorf("refused for the test") }
	path := filepath.Join(t.TempDir(), "x.ndjson")
	f, logs := rawFile(path, true, &Counters{})
	defer f.Close()
	deliverRaw(t, f, []string{"a", strings.Repeat("b", 9000)})
	deliverRaw(t, f, []string{"c"})
	require.Nil(t, f.df)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "a\n"+strings.Repeat("b", 9000)+"\nc\n", string(got))
	require.Contains(t, logs.String(), "direct I/O refused")
	require.Contains(t, logs.String(), "refused for the test")
}

// TestFileDirectWriteRefused: a file system that opens O_DIRECT but
// refuses the writes (EINVAL) gets the batch through the page cache, and
// the rest too. Not parallel: it replaces writeDirect.
func TestFileDirectWriteRefused(t *testing.T) {
	dir := t.TempDir()
	if !directWorks(t, dir) {
		t.Skip("no O_DIRECT on this file system: nothing to refuse")
	}
	orig := writeDirect
	defer func() { writeDirect = orig }()
	refused := 0
	writeDirect = func(*os.File, []byte, int64) (int, error) {
		refused++
		return 0, &os.PathError{Op: "write", Path: "x", Err: syscall.EINVAL}
	}
	path := filepath.Join(dir, "x.ndjson")
	f, logs := rawFile(path, true, &Counters{})
	defer f.Close()
	deliverRaw(t, f, []string{"a"}) // less than a block: no direct write yet
	require.NotNil(t, f.df)
	deliverRaw(t, f, []string{strings.Repeat("b", 9000), "c"})
	require.Nil(t, f.df, "direct I/O given up")
	deliverRaw(t, f, []string{strings.Repeat("d", 5000)})
	require.Equal(t, 1, refused)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "a\n"+strings.Repeat("b", 9000)+"\nc\n"+strings.Repeat("d", 5000)+"\n", string(got))
	require.Contains(t, logs.String(), "direct I/O write refused")
}

// TestFileRetryAfterPartialWrite: a write that fails part way (EIO after
// some blocks) is cut back, so the batch retried by the runner comes out
// once, whole. Not parallel: it replaces writeDirect.
func TestFileRetryAfterPartialWrite(t *testing.T) {
	dir := t.TempDir()
	if !directWorks(t, dir) {
		t.Skip("no O_DIRECT on this file system")
	}
	orig := writeDirect
	defer func() { writeDirect = orig }()
	path := filepath.Join(dir, "x.ndjson")
	c := &Counters{}
	f, logs := rawFile(path, true, c)
	defer f.Close()
	deliverRaw(t, f, []string{"first"})
	var batch []string
	for i := 0; i < 100; i++ {
		batch = append(batch, fmt.Sprintf("%03d %s", i, strings.Repeat("z", 200)))
	}
	evs := make([]event.Event, len(batch))
	for i, l := range batch {
		evs[i] = event.Event{Log: l}
	}
	writeDirect = func(df *os.File, b []byte, off int64) (int, error) {
		n, _ := orig(df, b[:blockSize*2], off) // two blocks land, then the disk fails
		return n, &os.PathError{Op: "write", Path: "x", Err: syscall.EIO}
	}
	_, err := f.Deliver(context.Background(), evs, spool.Pos{})
	require.ErrorIs(t, err, syscall.EIO)
	writeDirect = orig
	_, err = f.Deliver(context.Background(), evs, spool.Pos{}) // the runner's retry
	require.NoError(t, err)
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "first\n"+strings.Join(batch, "\n")+"\n", string(got))
	require.Empty(t, logs.String())
}
