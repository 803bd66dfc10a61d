package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// daemons are the services that must never exit during a fault.
var daemons = []string{"logrouter", "scheduler", "scheduler-standby", "exitwatch", "exporter"}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// streamer sends numbered records to the logrouter's forward port, each
// waiting for its ack (chunk option): a nil error means the logrouter has
// the record durably in its spool.
type streamer struct {
	service string
	mu      sync.Mutex
	acked   []int
	failed  int
	next    int
	stop    chan struct{}
	done    chan struct{}
}

func startStreamer(t *testing.T, service string, every time.Duration) *streamer {
	t.Helper()
	st := &streamer{service: service, stop: make(chan struct{}), done: make(chan struct{})}
	port, _ := strconv.Atoi(forwardPort)
	go func() {
		defer close(st.done)
		var lg *fluent.Fluent
		defer func() {
			if lg != nil {
				_ = lg.Close()
			}
		}()
		for {
			select {
			case <-st.stop:
				return
			case <-time.After(every):
			}
			if lg == nil {
				var err error
				lg, err = fluent.New(fluent.Config{FluentHost: "127.0.0.1", FluentPort: port, RequestAck: true,
					Timeout: 2 * time.Second, WriteTimeout: 3 * time.Second, MaxRetry: 1, RetryWait: 100, SubSecondPrecision: true})
				if err != nil {
					st.mu.Lock()
					st.failed++
					st.mu.Unlock()
					continue
				}
			}
			st.mu.Lock()
			id := st.next
			st.next++
			st.mu.Unlock()
			err := lg.PostWithTime("e2e."+service, time.Now(), map[string]any{
				"cluster": "e2e", "service": service, "container": "streamer",
				"log": fmt.Sprintf(`{"level":"info","id":%d}`, id),
			})
			st.mu.Lock()
			if err == nil {
				st.acked = append(st.acked, id)
			} else {
				st.failed++
			}
			st.mu.Unlock()
			if err != nil {
				_ = lg.Close()
				lg = nil
			}
		}
	}()
	t.Cleanup(st.halt)
	return st
}

func (st *streamer) halt() {
	select {
	case <-st.stop:
	default:
		close(st.stop)
	}
	<-st.done
}

func (st *streamer) counts() (acked, failed int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.acked), st.failed
}

// requireAllInS3 waits until every acked record of st is in S3 under
// e2e/<service>/YYYY/MM/DD/.
func (st *streamer) requireAllInS3(t *testing.T, within time.Duration) {
	t.Helper()
	st.mu.Lock()
	want := append([]int(nil), st.acked...)
	st.mu.Unlock()
	require.NotEmpty(t, want, "no record was acked at all")
	prefix := datePrefix("e2e", st.service)
	var missing []int
	require.Eventually(t, func() bool {
		lines, err := s3Lines(context.Background(), prefix)
		if err != nil {
			t.Logf("s3: %v", err)
			return false
		}
		have := map[int]bool{}
		for _, l := range lines {
			var a struct{ ID *int }
			if json.Unmarshal(l.Attributes, &a) == nil && a.ID != nil {
				have[*a.ID] = true
			}
		}
		missing = missing[:0]
		for _, id := range want {
			if !have[id] {
				missing = append(missing, id)
			}
		}
		return len(missing) == 0
	}, within, 2*time.Second, "acked records missing from S3 under %s", prefix)
	t.Logf("all %d acked records of %s are in S3", len(want), st.service)
	_ = missing
}

// daemonStarts records each daemon's container start time and restart
// count: unchanged afterwards means no daemon exited.
func (s *stack) daemonStarts(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range daemons {
		v, err := inspect(s.container(t, d), "{{.State.Status}} {{.State.StartedAt}} restarts={{.RestartCount}}")
		require.NoError(t, err)
		out[d] = v
	}
	return out
}

// logrouterSpoolBytes reads output.archive.spool_bytes from the
// logrouter's Fluent-Bit-style /api/v1/metrics.
func logrouterSpoolBytes() (float64, error) {
	var m map[string]any
	if err := getJSON("http://127.0.0.1:"+logrouterPort+"/api/v1/metrics", &m); err != nil {
		return 0, err
	}
	v, ok := num(m, "output", "archive", "spool_bytes")
	if !ok {
		return 0, fmt.Errorf("no output.archive.spool_bytes in %v", m["output"])
	}
	return v, nil
}

// TestFaultLogrouterKill: SIGKILL the logrouter while a forward client
// streams acked records; after the restart every acked record is in S3.
func TestFaultLogrouterKill(t *testing.T) {
	s := requireStack(t)
	lr := s.container(t, "logrouter")
	before, err := inspect(lr, "{{.State.StartedAt}}")
	require.NoError(t, err)

	st := startStreamer(t, "kill-"+randHex(3), 5*time.Millisecond)
	require.Eventually(t, func() bool { a, _ := st.counts(); return a >= 100 }, 30*time.Second, 50*time.Millisecond, "streamer never got 100 acks")
	docker(t, "kill", "-s", "KILL", lr)
	killedAt, _ := st.counts()
	require.Eventually(t, func() bool {
		running, err := inspect(lr, "{{.State.Running}}")
		return err == nil && running == "false"
	}, 30*time.Second, 100*time.Millisecond)
	docker(t, "start", lr)
	require.NoError(t, s.waitHealthy([]string{"logrouter"}, 60*time.Second))
	after, err := inspect(lr, "{{.State.StartedAt}}")
	require.NoError(t, err)
	require.NotEqual(t, before, after, "the logrouter was not restarted")
	// Keep streaming through the restarted logrouter.
	require.Eventually(t, func() bool { a, _ := st.counts(); return a >= killedAt+100 }, 60*time.Second, 50*time.Millisecond,
		"no acks after the restart")
	st.halt()
	acked, failed := st.counts()
	t.Logf("streamed: %d acked, %d failed around the kill (acked %d before it)", acked, failed, killedAt)
	st.requireAllInS3(t, 90*time.Second)
}

// TestFaultS3Disconnect: the logrouter loses its network to S3 for 30 s
// while records keep coming; the spool grows, then drains, nothing lost.
func TestFaultS3Disconnect(t *testing.T) {
	s := requireStack(t)
	lr := s.container(t, "logrouter")
	network := project + "_s3"
	docker(t, "network", "disconnect", network, lr)
	connected := false
	t.Cleanup(func() {
		if !connected {
			_ = dockerQuiet("network", "connect", network, lr)
		}
	})
	start := time.Now()
	st := startStreamer(t, "s3out-"+randHex(3), 10*time.Millisecond)
	var peak float64
	require.Eventually(t, func() bool {
		b, err := logrouterSpoolBytes()
		peak = max(peak, b)
		return err == nil && b > 0
	}, 20*time.Second, 250*time.Millisecond, "spool never grew while S3 was unreachable")
	// The outage lasts 30 s; the spool keeps growing meanwhile.
	first := peak
	for time.Since(start) < 30*time.Second {
		if b, err := logrouterSpoolBytes(); err == nil {
			peak = max(peak, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
	require.Greater(t, peak, first, "spool did not grow during the outage")
	st.halt()
	acked, failed := st.counts()
	t.Logf("outage: %d records acked, %d failed, spool peaked at %.0f bytes", acked, failed, peak)
	docker(t, "network", "connect", network, lr)
	connected = true
	require.Eventually(t, func() bool {
		b, err := logrouterSpoolBytes()
		return err == nil && b == 0
	}, 90*time.Second, 500*time.Millisecond, "spool did not drain after S3 came back")
	st.requireAllInS3(t, 60*time.Second)
}

func dockerQuiet(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return execCommand(ctx, "docker", args...).Run()
}

// TestFaultNATSOutage: NATS stops for 30 s. Every daemon reconnects, no
// daemon exits, readiness recovers, and no JetStream event is lost: a job
// that ends during the outage still gets its STOPPED event and verdict,
// and everything stored before is still there.
func TestFaultNATSOutage(t *testing.T) {
	s := requireStack(t)
	dir := t.TempDir()
	s.writeSchedule(t, dir, "e2e-slow", "rate(1 day)", map[string]string{"DEMO_SLEEP": "12s", "DEMO_LINES": "2"})
	s.apply(t, dir)
	starts := s.daemonStarts(t)
	runID := lastField(s.cli(t, "run", "e2e-slow"))
	runsBefore := len(s.stored(t, v1.Streams("taskyard").Runs, "taskyard.>"))

	nats := s.container(t, "nats")
	docker(t, "stop", "-t", "5", nats)
	stoppedAt := time.Now()
	// Logs do not need NATS: the forward input keeps acking meanwhile.
	st := startStreamer(t, "natsout-"+randHex(3), 50*time.Millisecond)
	// The outage itself: 30 s of no NATS (the job exits during it).
	time.Sleep(30*time.Second - time.Since(stoppedAt))
	st.halt()
	docker(t, "start", nats)
	require.NoError(t, s.waitHealthy(append([]string{"nats"}, daemons...), 90*time.Second), "readiness after NATS came back")
	// assert, not require: the checks below still run and report.
	assert.Equal(t, starts, s.daemonStarts(t), "a daemon exited or restarted during the NATS outage (status, start time, restart count)")

	fin := s.finished(t, "e2e-slow", runID, 90*time.Second)
	require.Equal(t, v1.Outcome_OUTCOME_SUCCEEDED, fin.GetOutcome(), "verdict of the run that ended during the outage: %v", fin)
	require.GreaterOrEqual(t, len(s.stored(t, v1.Streams("taskyard").Runs, "taskyard.>")), runsBefore+2, "RUNS lost messages across the NATS restart")
	var last atomic.Value // what the exporter said last, for the failure message
	last.Store("nothing")
	if !assert.Eventually(t, func() bool {
		m := metrics(t)
		d, _ := num(m, "schedule", "e2e-slow", "dispatched")
		ok, _ := num(m, "schedule", "e2e-slow", "succeeded")
		last.Store(fmt.Sprintf("dispatched=%v succeeded=%v", d, ok))
		return d == 1 && ok == 1
	}, 60*time.Second, time.Second, "exporter counts of e2e-slow after the outage") {
		t.Fatalf("the exporter last said %s", last.Load())
	}
	st.requireAllInS3(t, 60*time.Second)
}

// TestFaultSchedulerLeaderKill: two scheduler replicas (profile ha); the
// leader is SIGKILLed and the standby fires the next due schedules within
// the lease TTL + 1 s; no run id is dispatched twice.
func TestFaultSchedulerLeaderKill(t *testing.T) {
	const leaseTTL = 10 * time.Second // docker-compose.yml default
	s := requireStack(t)
	dispatched := s.collect(t, subj.RunDispatched("e2e-tick"))
	failed := s.collect(t, subj.RunDispatchFailed("e2e-tick"))
	dir := t.TempDir()
	s.writeSchedule(t, dir, "e2e-tick", "rate(2 seconds)", map[string]string{"DEMO_LINES": "1"})
	s.apply(t, dir)
	t.Cleanup(func() {
		_ = execCommand(context.Background(), s.bin+"/taskyard", "--nats-url", "nats://127.0.0.1:"+natsPort, "schedule", "disable", "e2e-tick").Run()
	})

	var leader string
	require.Eventually(t, func() bool {
		msgs := dispatched.all()
		if len(msgs) < 3 {
			return false
		}
		leader = msgs[len(msgs)-1].(*v1.RunDispatched).GetInstance()
		return true
	}, 60*time.Second, 100*time.Millisecond, "e2e-tick never fired three times")
	svc := map[string]string{"scheduler-a": "scheduler", "scheduler-b": "scheduler-standby"}
	require.Contains(t, svc, leader)
	killed := s.container(t, svc[leader])
	docker(t, "kill", "-s", "KILL", killed)
	killedAt := time.Now()
	t.Cleanup(func() { _ = dockerQuiet("start", killed) })

	var first *v1.RunDispatched
	require.Eventually(t, func() bool {
		for _, m := range dispatched.all() {
			d := m.(*v1.RunDispatched)
			if d.GetInstance() != leader {
				first = d
				return true
			}
		}
		return false
	}, leaseTTL+30*time.Second, 100*time.Millisecond, "the standby never fired after the leader was killed")
	took := first.GetDecidedAt().AsTime().Sub(killedAt)
	t.Logf("leader %s killed; standby %s fired %s (scheduled %s) %s later, its container started %s after that",
		leader, first.GetInstance(), first.GetRunId(), first.GetScheduledAt().AsTime().Format(time.RFC3339Nano), took,
		first.GetDispatchedAt().AsTime().Sub(first.GetDecidedAt().AsTime()))
	// The lease key expires TTL after the dead leader's last renewal, at
	// most TTL after the kill; the standby aims its next Create at that
	// expiry (services/scheduler/internal/lease) and, with catchUp: latest,
	// fires the missed tick as soon as it leads. The bound is on the fire
	// (decided_at, when the runner is called), not on the docker runner's
	// container create and start that dispatched_at includes.
	require.LessOrEqual(t, took, leaseTTL+time.Second, "standby fired %s after the leader died (lease TTL %s + 1 s allowed)", took, leaseTTL)

	// A few more fires from the new leader, then the old one comes back as
	// standby.
	n := len(dispatched.all())
	require.Eventually(t, func() bool { return len(dispatched.all()) >= n+3 }, 30*time.Second, 100*time.Millisecond)
	docker(t, "start", killed)
	require.NoError(t, s.waitHealthy([]string{svc[leader]}, 60*time.Second))
	n = len(dispatched.all())
	require.Eventually(t, func() bool { return len(dispatched.all()) >= n+3 }, 30*time.Second, 100*time.Millisecond)
	s.cli(t, "schedule", "disable", "e2e-tick")

	seen := map[string]string{}
	var runs []string
	for _, m := range dispatched.all() {
		d := m.(*v1.RunDispatched)
		prev, dup := seen[d.GetRunId()]
		require.False(t, dup, "run %s dispatched twice (by %s and %s)", d.GetRunId(), prev, d.GetInstance())
		seen[d.GetRunId()] = d.GetInstance()
		runs = append(runs, d.GetRunId())
	}
	sort.Strings(runs)
	require.Empty(t, failed.all(), "dispatch failures: %v", failed.all())
	t.Logf("%d runs dispatched, each once", len(runs))
}
