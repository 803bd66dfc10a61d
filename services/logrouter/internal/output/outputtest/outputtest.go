// Package outputtest runs a sink behind a real spool and output.Runner,
// the way the daemon does, for the sinks' tests.
package outputtest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// Harness is a running runner.
type Harness struct {
	Spool    *spool.Spool
	Counters *output.Counters
	DeadPath string
	cancel   context.CancelFunc
	done     chan error
}

// Start spools evs and starts a runner with fast retries, retrying forever.
func Start(t *testing.T, sink output.Sink, c *output.Counters, maxBatch int, evs []event.Event) *Harness {
	t.Helper()
	return StartWith(t, sink, c, maxBatch, 0, evs)
}

// StartWith is Start with a retry limit (attempts before dead-lettering).
func StartWith(t *testing.T, sink output.Sink, c *output.Counters, maxBatch, retryLimit int, evs []event.Event) *Harness {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: dir + "/spool"})
	if err != nil {
		t.Fatal(err)
	}
	var recs [][]byte
	for i := range evs {
		recs = append(recs, evs[i].AppendBinary(nil))
	}
	cm, err := sp.Append(context.Background(), recs)
	if err != nil {
		t.Fatal(err)
	}
	if err := cm.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &Harness{Spool: sp, Counters: c, DeadPath: dir + "/dead.ndjson", done: make(chan error, 1)}
	r := &output.Runner{
		Name: "test", Sink: sink, Spool: sp, Counters: c,
		Retry:           output.RetryPolicy{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Limit: retryLimit},
		MaxBatchRecords: maxBatch, MaxBatchBytes: 64 << 20, DrainTimeout: 5 * time.Second,
		DeadLetter: &output.DeadLetter{Path: h.DeadPath},
		Log:        slog.New(slog.DiscardHandler),
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-h.done
		sp.Close()
	})
	return h
}
