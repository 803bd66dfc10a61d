package output

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// niceSink records the nice value of the thread each Deliver runs on.
type niceSink struct {
	mu    sync.Mutex
	nices []int
}

func (s *niceSink) Deliver(_ context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error) {
	n, err := threadNice()
	if err != nil {
		return spool.Pos{}, err
	}
	s.mu.Lock()
	s.nices = append(s.nices, n)
	s.mu.Unlock()
	return end, nil
}

func (s *niceSink) Flush(context.Context, bool) (spool.Pos, bool, error) {
	return spool.Pos{}, false, nil
}
func (s *niceSink) Close() error { return nil }

func (s *niceSink) seen() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.nices...)
}

// threadNices reads the nice value of every thread of this process from
// /proc (field 19 of a task's stat).
func threadNices(t *testing.T) map[int]int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/self/task/*/stat")
	require.NoError(t, err)
	out := map[int]int{}
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue // the thread just exited
		}
		// The command name, in parentheses, may hold spaces: fields count
		// from after its closing parenthesis (field 3 is the first there).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		n, err := strconv.Atoi(f[19-3])
		require.NoError(t, err)
		tid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		out[tid] = n
	}
	return out
}

// TestRunnerNiceLowersOnlyItsThread: with Nice set, every Deliver runs on
// a thread whose nice value was raised by Nice; when the runner returns
// that thread is gone, so no goroutine of the process runs on it later.
func TestRunnerNiceLowersOnlyItsThread(t *testing.T) {
	base, err := threadNice()
	require.NoError(t, err)
	for _, n := range threadNices(t) {
		require.Equal(t, base, n, "every thread starts at the process's nice value")
	}
	sp, err := spool.Open(spool.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer sp.Close()
	sink := &niceSink{}
	r := &Runner{Name: "nice", Sink: sink, Spool: sp, Counters: &Counters{}, MaxBatchRecords: 1, Nice: 7, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	want := min(base+7, 19)
	for i := 0; i < 5; i++ {
		e := event.Event{Time: time.Now(), Log: "x"}
		cm, err := sp.Append(context.Background(), [][]byte{e.AppendBinary(nil)})
		require.NoError(t, err)
		require.NoError(t, cm.Wait(context.Background()))
	}
	require.Eventually(t, sp.Empty, 5*time.Second, time.Millisecond)
	require.NotEmpty(t, sink.seen())
	for _, n := range sink.seen() {
		require.Equal(t, want, n, "Deliver ran on the runner's lowered thread")
	}
	lowered := 0
	for _, n := range threadNices(t) {
		if n == want {
			lowered++
		}
	}
	require.Equal(t, 1, lowered, "only the runner's thread is lowered")

	cancel()
	require.NoError(t, <-done)
	// The runner's thread exits with it (it is never unlocked).
	require.Eventually(t, func() bool {
		for _, n := range threadNices(t) {
			if n != base {
				return false
			}
		}
		return true
	}, 5*time.Second, 5*time.Millisecond, "a thread with the lowered priority outlived the runner")
}

// TestRunnerNiceZero: without Nice the runner's deliveries run at the
// process's priority.
func TestRunnerNiceZero(t *testing.T) {
	base, err := threadNice()
	require.NoError(t, err)
	sp, err := spool.Open(spool.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer sp.Close()
	sink := &niceSink{}
	r := &Runner{Name: "plain", Sink: sink, Spool: sp, Counters: &Counters{}, Log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	e := event.Event{Time: time.Now(), Log: "x"}
	cm, err := sp.Append(context.Background(), [][]byte{e.AppendBinary(nil)})
	require.NoError(t, err)
	require.NoError(t, cm.Wait(context.Background()))
	require.Eventually(t, sp.Empty, 5*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, []int{base}, sink.seen())
}
