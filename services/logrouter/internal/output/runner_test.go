package output_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/output/outputtest"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// brokenPipe fails every write until healed.
type brokenPipe struct {
	healed atomic.Bool
	n      atomic.Int64
}

func (b *brokenPipe) Write(p []byte) (int, error) {
	if !b.healed.Load() {
		return 0, errors.New("broken pipe")
	}
	b.n.Add(int64(len(p)))
	return len(p), nil
}

func TestRetryForeverThenDeliver(t *testing.T) {
	t.Parallel()
	w := &brokenPipe{}
	var c output.Counters
	h := outputtest.Start(t, &output.Writer{W: w, Format: event.FormatRaw, Counters: &c}, &c, 100, []event.Event{{Time: time.Now(), Log: "a"}, {Time: time.Now(), Log: "b"}})
	require.Eventually(t, func() bool { return c.Retries.Load() >= 3 }, 5*time.Second, 5*time.Millisecond)
	require.False(t, h.Spool.Empty(), "undelivered records stay spooled")
	w.healed.Store(true)
	require.Eventually(t, h.Spool.Empty, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(4), w.n.Load())
	require.Equal(t, int64(2), c.ProcRecords.Load())
	require.Zero(t, c.RetriesFailed.Load())
	require.Positive(t, c.RetriedRecords.Load())
}

func TestRetryLimitDeadLetters(t *testing.T) {
	t.Parallel()
	var c output.Counters
	h := outputtest.StartWith(t, &output.Writer{W: &brokenPipe{}, Format: event.FormatRaw, Counters: &c}, &c, 100, 3,
		[]event.Event{{Time: time.Unix(1, 0), Cluster: "c", Service: "s", Log: "lost?"}})
	require.Eventually(t, h.Spool.Empty, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(1), c.RetriesFailed.Load())
	require.Equal(t, int64(1), c.DeadLettered.Load())
	require.Equal(t, int64(1), c.DroppedRecords.Load())
	require.Equal(t, int64(2), c.Retries.Load(), "3 attempts: 2 retries")
	f, err := os.Open(h.DeadPath)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	require.True(t, sc.Scan())
	require.Contains(t, sc.Text(), `"reason":"gave up after 3 attempts: write: broken pipe"`)
	require.Contains(t, sc.Text(), `"log":"lost?"`)
}

// TestBatchesReuseMemory: the runner reads batch after batch into one
// buffer; a file sink (whose renderer remembers the tags it rendered last)
// still writes every event with its own tags and line.
func TestBatchesReuseMemory(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/out.ndjson"
	var c output.Counters
	var evs []event.Event
	for i := 0; i < 500; i++ {
		// Records of one size, so each batch lies where the one before did,
		// and tags that change from one batch of 7 to the next.
		evs = append(evs, event.Event{Time: time.Unix(1700000000, 0), Cluster: fmt.Sprintf("c%03d", i/7), Service: fmt.Sprintf("s%d", i/7%3/2), Level: "info", Log: fmt.Sprintf("line %03d", i)})
	}
	h := outputtest.Start(t, &output.File{Path: path, Format: event.FormatJSON, Counters: &c}, &c, 7, evs)
	require.Eventually(t, h.Spool.Empty, 5*time.Second, 5*time.Millisecond)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	i := 0
	for ; sc.Scan(); i++ {
		var got struct{ Cluster, Service, Log string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &got))
		require.Equal(t, struct{ Cluster, Service, Log string }{evs[i].Cluster, evs[i].Service, evs[i].Log}, got)
	}
	require.Equal(t, len(evs), i)
}

// TestSetDrainTimeoutWhileRunning: the drain budget set while the runner
// runs (as the daemon does once its inputs have stopped) is the one used,
// not the one it started with.
func TestSetDrainTimeoutWhileRunning(t *testing.T) {
	t.Parallel()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer sp.Close()
	e := event.Event{Time: time.Now(), Log: "never delivered"}
	cm, err := sp.Append(context.Background(), [][]byte{e.AppendBinary(nil)})
	require.NoError(t, err)
	require.NoError(t, cm.Wait(context.Background()))
	var c output.Counters
	r := &output.Runner{Name: "stuck", Sink: &output.Writer{W: &brokenPipe{}, Format: event.FormatRaw, Counters: &c}, Spool: sp, Counters: &c,
		Retry:        output.RetryPolicy{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		DrainTimeout: time.Hour, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	require.Eventually(t, func() bool { return c.Retries.Load() > 0 }, 5*time.Second, time.Millisecond)
	r.SetDrainTimeout(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the runner kept to its first drain timeout (an hour)")
	}
	require.False(t, sp.Empty(), "what was not delivered stays spooled")
}
