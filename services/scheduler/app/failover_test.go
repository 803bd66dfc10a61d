package app_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// recRunner records every run it is asked to start, across instances.
type recRunner struct {
	mu    sync.Mutex
	calls map[string]int
	reqs  []app.RunRequest
}

func newRecRunner() *recRunner { return &recRunner{calls: map[string]int{}} }

func (r *recRunner) Name() string { return "rec" }

func (r *recRunner) Run(_ context.Context, req app.RunRequest) (app.RunResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[req.RunID]++
	r.reqs = append(r.reqs, req)
	return app.RunResult{TaskIDs: []string{"rec/" + req.RunID}}, nil
}

func (r *recRunner) Stop(context.Context, *v1.ScheduleSpec, *schedule.Profile, []string, string) error {
	return nil
}

func (r *recRunner) Active(context.Context, *v1.ScheduleSpec, *schedule.Profile) ([]app.RunningTask, error) {
	return nil, nil
}

func (r *recRunner) ClusterLoad(context.Context, *schedule.Profile) (int, error) { return 0, nil }

func (r *recRunner) snapshot() ([]app.RunRequest, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls := map[string]int{}
	for k, v := range r.calls {
		calls[k] = v
	}
	return append([]app.RunRequest(nil), r.reqs...), calls
}

// TestFailover runs two scheduler instances with rate(1 second) schedules
// and repeatedly kills the leader (its context cancelled without releasing
// the lease, as in a crash) until more than 200 fires have been decided.
// Every fire must reach the runner exactly once: no run id twice, and no
// second of any schedule missing between its first and last fire.
func TestFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("failover runs ~25 s of real time")
	}
	nc, url := startNATS(t)
	rec := newRecRunner()
	const schedules = 10

	var (
		mu    sync.Mutex
		insts = map[string]*instance{}
		seq   int
	)
	launch := func() {
		mu.Lock()
		defer mu.Unlock()
		seq++
		cfg := baseConfig(url)
		cfg.Instance = fmt.Sprintf("sched-%d", seq)
		cfg.LeaseTTL = time.Second
		cfg.ReleaseLease = false
		insts[cfg.Instance] = start(t, cfg, app.Deps{Runner: rec})
	}
	launch()
	launch()

	var specs []*v1.ScheduleSpec
	for i := 0; i < schedules; i++ {
		specs = append(specs, &v1.ScheduleSpec{
			Name: fmt.Sprintf("tick-%02d", i), Cluster: "any", Type: "scheduled",
			Containers: []*v1.Container{{Name: "c", Image: "x", Essential: true, Memory: 128}},
			Timing: &v1.Timing{
				Expression: "rate(1 second)", Timezone: "UTC", TaskCount: 1, Concurrency: "allow", Enabled: true,
				StartingDeadline: durationpb.New(time.Minute), CatchUp: &v1.CatchUp{Mode: "all", Max: 100},
			},
		})
	}
	var ar v1.ApplyReply
	request(t, nc, "create", &v1.ApplyRequest{Schedules: specs, AppliedBy: "test"}, &ar)
	require.Empty(t, ar.Error)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	leases, err := js.KeyValue(context.Background(), v1.Buckets("").Leases)
	require.NoError(t, err)
	leader := func() string {
		e, err := leases.Get(context.Background(), "scheduler")
		if err != nil {
			return ""
		}
		return string(e.Value())
	}

	kills := 0
	deadline := time.Now().Add(90 * time.Second)
	for {
		reqs, _ := rec.snapshot()
		if len(reqs) >= 220 && kills >= 5 {
			break
		}
		require.True(t, time.Now().Before(deadline), "only %d fires and %d kills", len(reqs), kills)
		// Let the current leader dispatch for a while, then kill it.
		before := len(reqs)
		require.Eventually(t, func() bool {
			r, _ := rec.snapshot()
			return len(r) >= before+2*schedules
		}, 20*time.Second, 50*time.Millisecond, "fires resume after a failover")
		var id string
		require.Eventually(t, func() bool {
			id = leader()
			mu.Lock()
			defer mu.Unlock()
			return insts[id] != nil
		}, 10*time.Second, 20*time.Millisecond)
		mu.Lock()
		victim := insts[id]
		delete(insts, id)
		mu.Unlock()
		victim.stop(t) // cancelled; the lease stays until it expires
		kills++
		launch()
	}
	stoppedAt := time.Now()
	mu.Lock()
	for id, inst := range insts {
		inst.stop(t)
		delete(insts, id)
	}
	mu.Unlock()

	reqs, calls := rec.snapshot()
	for id, n := range calls {
		require.Equal(t, 1, n, "run %s dispatched %d times", id, n)
	}
	bySchedule := map[string][]time.Time{}
	for _, r := range reqs {
		bySchedule[r.Spec.GetName()] = append(bySchedule[r.Spec.GetName()], r.ScheduledAt)
	}
	require.Len(t, bySchedule, schedules)
	total := 0
	for name, times := range bySchedule {
		sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
		for i := 1; i < len(times); i++ {
			require.Equal(t, time.Second, times[i].Sub(times[i-1]), "schedule %s: fires around %s missing", name, times[i-1])
		}
		last := times[len(times)-1]
		require.WithinDuration(t, stoppedAt, last, 5*time.Second, "schedule %s kept firing until the end", name)
		total += len(times)
	}
	require.GreaterOrEqual(t, total, 200)
	t.Logf("%d fires over %d leader kills, each dispatched once", total, kills)
}
