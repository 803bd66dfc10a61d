package datadogout

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/output/outputtest"
)

// intake is an HTTP logs intake v2 that checks each request and answers
// with the statuses scripted in plan (then 202).
type intake struct {
	t        *testing.T
	mu       sync.Mutex
	plan     []int
	requests int
	entries  []map[string]any
}

func (in *intake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	defer in.mu.Unlock()
	require.Equal(in.t, "/api/v2/logs", r.URL.Path)
	require.Equal(in.t, http.MethodPost, r.Method)
	require.Equal(in.t, "key-123", r.Header.Get("DD-API-KEY"))
	require.Equal(in.t, "gzip", r.Header.Get("Content-Encoding"))
	require.Equal(in.t, "application/json", r.Header.Get("Content-Type"))
	zr, err := gzip.NewReader(r.Body)
	require.NoError(in.t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(in.t, err)
	require.LessOrEqual(in.t, len(raw), 5_000_000, "at most 5 MB uncompressed")
	var batch []map[string]any
	require.NoError(in.t, json.Unmarshal(raw, &batch))
	require.LessOrEqual(in.t, len(batch), 1000, "at most 1000 entries")
	in.requests++
	status := http.StatusAccepted
	if len(in.plan) > 0 {
		status, in.plan = in.plan[0], in.plan[1:]
	}
	if status == http.StatusAccepted {
		in.entries = append(in.entries, batch...)
	}
	w.WriteHeader(status)
	fmt.Fprint(w, "{}")
}

func evs(n int, size int) []event.Event {
	var out []event.Event
	for i := 0; i < n; i++ {
		out = append(out, event.Event{Time: time.UnixMilli(1_700_000_000_000 + int64(i)), Cluster: "prod", Service: "etl", Container: "main", Task: "t1", Level: []string{"warn", "fatal", "unknown"}[i%3], RunID: "r1",
			Log: fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("p", size))})
	}
	return out
}

func start(t *testing.T, in *intake, e []event.Event) (*outputtest.Harness, *output.Counters) {
	srv := httptest.NewServer(in)
	t.Cleanup(srv.Close)
	var c output.Counters
	s := &Sink{Client: srv.Client(), URL: srv.URL + "/api/v2/logs", APIKey: "key-123", Source: "taskyard", Hostname: "host-1", StaticTags: []string{"env:prod"}, Counters: &c}
	return outputtest.Start(t, s, &c, 5000, e), &c
}

func TestEntriesAndLimits(t *testing.T) {
	t.Parallel()
	in := &intake{t: t}
	// 2,500 small entries: three requests by count; 30 × 400 KB: split by size.
	e := append(evs(2500, 10), evs(30, 400_000)...)
	h, c := start(t, in, e)
	require.Eventually(t, func() bool { return h.Spool.Empty() }, 20*time.Second, 10*time.Millisecond)
	in.mu.Lock()
	defer in.mu.Unlock()
	require.Len(t, in.entries, 2530)
	require.Equal(t, 5, in.requests, "1000 + 1000 + (500 small + 11 big) + 12 big + 7 big")
	first := in.entries[0]
	require.Equal(t, "taskyard", first["ddsource"])
	require.Equal(t, "etl", first["service"])
	require.Equal(t, "host-1", first["hostname"])
	require.Equal(t, "warning", first["status"])
	require.Equal(t, "critical", in.entries[1]["status"])
	require.Equal(t, "info", in.entries[2]["status"])
	require.Equal(t, "system:prod,service:etl,application:main,task:t1,env:prod", first["ddtags"])
	require.Equal(t, float64(1_700_000_000_000), first["timestamp"])
	require.Equal(t, `{"i":0,"pad":"pppppppppp"}`, first["message"])
	require.Equal(t, int64(2530), c.ProcRecords.Load())
}

func TestRetryRules(t *testing.T) {
	t.Parallel()
	// 408, 429, 500, 503 are retried; then 400 is permanent (dead-letter); then accepted.
	in := &intake{t: t, plan: []int{408, 429, 500, 503, 400}}
	h, c := start(t, in, evs(1500, 10)) // two requests: 1000 + 500
	require.Eventually(t, func() bool { return h.Spool.Empty() }, 20*time.Second, 10*time.Millisecond)
	in.mu.Lock()
	defer in.mu.Unlock()
	require.Equal(t, 6, in.requests, "4 retried failures, 1 permanent, 1 accepted")
	require.Len(t, in.entries, 500)
	require.Equal(t, int64(4), c.Retries.Load())
	require.Equal(t, int64(1000), c.DeadLettered.Load())
	require.Equal(t, int64(500), c.ProcRecords.Load())
	f, err := os.Open(h.DeadPath)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		require.Contains(t, m["reason"], "400 Bad Request")
		n++
	}
	require.Equal(t, 1000, n)
}
