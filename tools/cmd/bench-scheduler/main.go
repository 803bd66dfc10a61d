// Command bench-scheduler measures the scheduler with 10,000 schedules: the
// dispatch lag (runner call time minus scheduled time) under a mixed set of
// rate and cron expressions from 1 second to 1 day, and the CPU and memory
// it uses while idle between fires. The NATS server runs in a child process
// so that the figures are the scheduler's own. Runs are dispatched to a
// runner that only records the call.
//
//	go run ./cmd/bench-scheduler -schedules 10000 -load 3m -idle 30s
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

func main() {
	var (
		n        = flag.Int("schedules", 10000, "number of schedules")
		load     = flag.Duration("load", 3*time.Minute, "how long to measure dispatch lag under the mixed set")
		idle     = flag.Duration("idle", 30*time.Second, "how long to measure CPU while no schedule is due")
		natsOnly = flag.String("nats-only", "", "internal: serve NATS with JetStream in DIR (child process)")
		listen   = flag.String("listen", "127.0.0.1:14333", "NATS address of the child process")
		cpuProf  = flag.String("cpuprofile", "", "write a CPU profile of the load phase to this file")
		burst    = flag.Int("burst", 0, "add this many one-time schedules that all fire at the same second, a third into the load phase (an hour boundary on demand)")
	)
	flag.Parse()
	if *natsOnly != "" {
		serveNATS(*natsOnly, *listen)
		return
	}
	if err := run(*n, *burst, *load, *idle, *listen, *cpuProf); err != nil {
		fmt.Fprintln(os.Stderr, "bench-scheduler:", err)
		os.Exit(1)
	}
}

func serveNATS(dir, listen string) {
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: listen, StoreDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	srv.Shutdown()
}

// benchRunner records the lag of every call and nothing else.
type benchRunner struct {
	mu    sync.Mutex
	lags  []time.Duration
	on    bool
	bySec map[int64][]time.Duration
}

func (r *benchRunner) Name() string { return "bench" }
func (r *benchRunner) Run(_ context.Context, req app.RunRequest) (app.RunResult, error) {
	lag := time.Since(req.ScheduledAt)
	r.mu.Lock()
	if r.on && req.Trigger == v1.Trigger_TRIGGER_SCHEDULE {
		r.lags = append(r.lags, lag)
		if r.bySec == nil {
			r.bySec = map[int64][]time.Duration{}
		}
		r.bySec[req.ScheduledAt.Unix()] = append(r.bySec[req.ScheduledAt.Unix()], lag)
	}
	r.mu.Unlock()
	return app.RunResult{}, nil
}
func (r *benchRunner) Stop(context.Context, *v1.ScheduleSpec, *schedule.Profile, []string, string) error {
	return nil
}
func (r *benchRunner) Active(context.Context, *v1.ScheduleSpec, *schedule.Profile) ([]app.RunningTask, error) {
	return nil, nil
}
func (r *benchRunner) ClusterLoad(context.Context, *schedule.Profile) (int, error) { return 0, nil }

// mixed returns the i-th schedule expression of the load set: from every
// second to daily, half of the rate ones anchored at random offsets.
func mixed(i int, rng *rand.Rand) (string, *timestamppb.Timestamp) {
	exprs := []struct {
		expr   string
		weight int
	}{
		{"rate(1 second)", 1},
		{"rate(10 seconds)", 4},
		{"rate(30 seconds)", 5},
		{"rate(1 minute)", 20},
		{"cron(* * * * ? *)", 10},
		{"rate(5 minutes)", 20},
		{"cron(*/15 * * * ? *)", 10},
		{"rate(1 hour)", 15},
		{"cron(0 3 * * ? *)", 10},
		{"rate(1 day)", 5},
	}
	k := i % 100
	for _, e := range exprs {
		if k < e.weight {
			var anchor *timestamppb.Timestamp
			if strings.HasPrefix(e.expr, "rate") && i%2 == 0 {
				anchor = timestamppb.New(time.Unix(0, 0).Add(time.Duration(rng.IntN(86400)) * time.Second))
			}
			return e.expr, anchor
		}
		k -= e.weight
	}
	panic("weights do not add up to 100")
}

func specs(n int, idle bool) []*v1.ScheduleSpec {
	rng := rand.New(rand.NewPCG(1, 2))
	far := time.Now().UTC().Add(3 * time.Hour)
	out := make([]*v1.ScheduleSpec, 0, n)
	for i := 0; i < n; i++ {
		expr, anchor := mixed(i, rng)
		if idle {
			// Daily, hours away: nothing is due during the idle window.
			expr, anchor = fmt.Sprintf("cron(%d %d * * ? *)", i%60, far.Hour()), nil
		}
		out = append(out, &v1.ScheduleSpec{
			Name: fmt.Sprintf("bench-%05d", i), Cluster: "bench", Type: "scheduled", Anchor: anchor,
			Containers: []*v1.Container{{Name: "app", Image: "busybox", Memory: 64, Essential: true, Command: []string{"true"}}},
			Timing: &v1.Timing{Expression: expr, Timezone: "UTC", TaskCount: 1, Concurrency: "allow", Enabled: true,
				StartingDeadline: durationpb.New(time.Minute), CatchUp: &v1.CatchUp{Mode: "none"}},
		})
	}
	return out
}

func apply(nc *nats.Conn, all []*v1.ScheduleSpec) error {
	for i := 0; i < len(all); i += 500 {
		data, err := proto.Marshal(&v1.ApplyRequest{Schedules: all[i:min(i+500, len(all))], AppliedBy: "bench"})
		if err != nil {
			return err
		}
		m, err := nc.Request("taskyard.ctl.scheduler.create", data, time.Minute)
		if err != nil {
			return err
		}
		var r v1.ApplyReply
		if err := proto.Unmarshal(m.Data, &r); err != nil {
			return err
		}
		if r.Error != "" {
			return fmt.Errorf("apply: %s", r.Error)
		}
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// childCPU returns the CPU time used so far by process pid.
func childCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ut, st int64
	_, _ = fmt.Sscan(f[11], &ut)
	_, _ = fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb float64
			_, _ = fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

// burstSpecs returns n one-time schedules firing together at `at`.
func burstSpecs(n int, at time.Time) []*v1.ScheduleSpec {
	out := make([]*v1.ScheduleSpec, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, &v1.ScheduleSpec{
			Name: fmt.Sprintf("burst-%05d", i), Cluster: "bench", Type: "scheduled",
			Containers: []*v1.Container{{Name: "app", Image: "busybox", Memory: 64, Essential: true, Command: []string{"true"}}},
			Timing: &v1.Timing{Expression: "at(" + at.UTC().Format("2006-01-02T15:04:05") + ")", Timezone: "UTC", TaskCount: 1, Concurrency: "allow", Enabled: true,
				StartingDeadline: durationpb.New(time.Minute), CatchUp: &v1.CatchUp{Mode: "none"}},
		})
	}
	return out
}

func run(n, burst int, load, idle time.Duration, listen, cpuProf string) error {
	dir, err := os.MkdirTemp("", "bench-scheduler")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	child := exec.Command(os.Args[0], "-nats-only", dir, "-listen", listen)
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { _ = child.Process.Signal(syscall.SIGTERM); _ = child.Wait() }()
	url := "nats://" + listen
	var nc *nats.Conn
	for i := 0; ; i++ {
		if nc, err = nats.Connect(url); err == nil {
			break
		}
		if i > 100 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer nc.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cfg app.Config
	cfg.NATS = natsconn.Config{URL: url, Prefix: v1.DefaultPrefix, Replicas: 1}
	cfg.Runner = app.RunnerExec
	cfg.Instance = "bench"
	cfg.LeaseTTL = 10 * time.Second
	cfg.ReleaseLease = true
	cfg.KillGrace = time.Second
	cfg.LogLevel = "warn"
	cfg.ClaimAhead = time.Second
	rec := &benchRunner{}
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, cfg, app.Deps{Log: logging.New(os.Stderr, slog.LevelWarn, "scheduler"), Runner: rec})
	}()
	for i := 0; ; i++ {
		if _, err := nc.Request("taskyard.ctl.scheduler.list", nil, time.Second); err == nil {
			break
		}
		if i > 100 {
			return fmt.Errorf("scheduler does not answer")
		}
		time.Sleep(100 * time.Millisecond)
	}

	fmt.Printf("machine: %d CPU, %s %s/%s\n", runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	// Phase 1: idle between fires.
	t0 := time.Now()
	if err := apply(nc, specs(n, true)); err != nil {
		return err
	}
	fmt.Printf("applied %d schedules in %s\n", n, time.Since(t0).Round(time.Millisecond))
	time.Sleep(5 * time.Second) // let the watch and GC settle
	runtime.GC()
	c0, w0 := cpuTime(), time.Now()
	time.Sleep(idle)
	cpu, wall := cpuTime()-c0, time.Since(w0)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("idle (%d schedules, none due, %s): CPU %.2f%% of one core; RSS %.1f MiB; Go heap in use %.1f MiB\n",
		n, idle, 100*cpu.Seconds()/wall.Seconds(), rssMiB(), float64(ms.HeapInuse)/(1<<20))

	// Phase 2: the mixed set.
	set := specs(n, false)
	var burstAt time.Time
	if burst > 0 {
		burstAt = time.Now().Add(2*time.Second + load/3).Truncate(time.Second)
		set = append(set, burstSpecs(burst, burstAt)...)
	}
	if err := apply(nc, set); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	rec.mu.Lock()
	rec.on = true
	rec.mu.Unlock()
	c0, w0 = cpuTime(), time.Now()
	n0 := childCPU(child.Process.Pid)
	if cpuProf != "" {
		f, err := os.Create(cpuProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	time.Sleep(load)
	if cpuProf != "" {
		pprof.StopCPUProfile()
	}
	cpu, wall = cpuTime()-c0, time.Since(w0)
	natsCPU := childCPU(child.Process.Pid) - n0
	rec.mu.Lock()
	rec.on = false
	lags := slices.Clone(rec.lags)
	rec.mu.Unlock()
	runtime.ReadMemStats(&ms)
	if len(lags) == 0 {
		return fmt.Errorf("no fires recorded")
	}
	slices.Sort(lags)
	pct := func(p float64) time.Duration { return lags[min(len(lags)-1, int(float64(len(lags))*p))] }
	fmt.Printf("load (%d mixed schedules, %s): %d fires (%.1f/s); dispatch lag p50 %s p99 %s max %s; CPU %.1f%% of one core (nats-server %.1f%%); RSS %.1f MiB; Go heap in use %.1f MiB\n",
		n, load, len(lags), float64(len(lags))/wall.Seconds(), pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond),
		lags[len(lags)-1].Round(10*time.Microsecond), 100*cpu.Seconds()/wall.Seconds(), 100*natsCPU.Seconds()/wall.Seconds(), rssMiB(), float64(ms.HeapInuse)/(1<<20))
	// Split by burst size: fires sharing their second with more than 500
	// others (the minute boundary, where every unanchored rate(1 minute),
	// cron(* * * * ? *), 5 and 15 minute schedule fire together) and the
	// rest.
	rec.mu.Lock()
	var small, big []time.Duration
	largest := 0
	for _, l := range rec.bySec {
		largest = max(largest, len(l))
		if len(l) > 500 {
			big = append(big, l...)
		} else {
			small = append(small, l...)
		}
	}
	rec.mu.Unlock()
	for _, part := range []struct {
		name string
		l    []time.Duration
	}{{"fires in seconds with <= 500 fires", small}, {"fires in seconds with > 500 fires", big}} {
		if len(part.l) == 0 {
			continue
		}
		slices.Sort(part.l)
		q := func(p float64) time.Duration { return part.l[min(len(part.l)-1, int(float64(len(part.l))*p))] }
		fmt.Printf("  %s: %d, lag p50 %s p99 %s max %s\n", part.name, len(part.l), q(0.5).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), part.l[len(part.l)-1].Round(10*time.Microsecond))
	}
	fmt.Printf("  largest burst: %d fires in one second\n", largest)
	if burst > 0 {
		l := slices.Clone(rec.bySec[burstAt.Unix()])
		slices.Sort(l)
		if len(l) == 0 {
			return fmt.Errorf("the burst at %s did not fire", burstAt.Format(time.RFC3339))
		}
		q := func(p float64) time.Duration { return l[min(len(l)-1, int(float64(len(l))*p))] }
		fmt.Printf("  the -burst second (%s): %d fires, lag p50 %s p99 %s max %s\n", burstAt.Format("15:04:05"), len(l),
			q(0.5).Round(10*time.Microsecond), q(0.99).Round(10*time.Microsecond), l[len(l)-1].Round(10*time.Microsecond))
	}
	cancel()
	return <-done
}
