package output

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

func TestFileRotates(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("directIO=%v", direct), func(t *testing.T) {
			t.Parallel()
			testFileRotates(t, direct)
		})
	}
}

func testFileRotates(t *testing.T, direct bool) {
	dir := t.TempDir()
	var c Counters
	f := &File{Path: filepath.Join(dir, "logs", "x.ndjson"), MaxBytes: 1000, MaxFiles: 2, DirectIO: direct, Format: event.FormatRaw, Counters: &c}
	defer f.Close()
	for i := 0; i < 10; i++ {
		var evs []event.Event
		for j := 0; j < 10; j++ {
			evs = append(evs, event.Event{Time: time.Now(), Log: fmt.Sprintf("%02d-%02d %s", i, j, bytes.Repeat([]byte("x"), 40))})
		}
		end := spool.Pos{Seg: 1, Off: int64(i)}
		got, err := f.Deliver(context.Background(), evs, end)
		require.NoError(t, err)
		require.Equal(t, end, got)
	}
	require.Equal(t, int64(100), c.ProcRecords.Load())
	for _, name := range []string{"x.ndjson", "x.ndjson.1", "x.ndjson.2"} {
		fi, err := os.Stat(filepath.Join(dir, "logs", name))
		require.NoError(t, err, name)
		require.LessOrEqual(t, fi.Size(), int64(1000), name)
	}
	_, err := os.Stat(filepath.Join(dir, "logs", "x.ndjson.3"))
	require.True(t, os.IsNotExist(err), "at most maxFiles rotated files")
	last, err := os.ReadFile(filepath.Join(dir, "logs", "x.ndjson"))
	require.NoError(t, err)
	require.Contains(t, string(last), "09-09 ")
}
