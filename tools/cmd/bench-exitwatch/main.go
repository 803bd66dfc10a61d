// Command bench-exitwatch measures exitwatch under load: it starts an
// embedded NATS, runs the taskyard-exitwatch binary against it as a child
// process, opens N active runs, then publishes task state events at a fixed
// rate (new runs going PROVISIONING -> PENDING -> RUNNING, old runs
// STOPPED, a share of them failing) while keeping N runs active. It reports
// the latency from a failing STOPPED event being published to its
// run_failed alert being published (p50/p99/max), the events exitwatch
// kept up with, and the child's memory (VmHWM/VmRSS from /proc).
//
//	go build -o /tmp/taskyard-exitwatch ./services/exitwatch/cmd/taskyard-exitwatch
//	go run ./tools/cmd/bench-exitwatch --exitwatch /tmp/taskyard-exitwatch
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-exitwatch:", err)
		os.Exit(1)
	}
}

type stats struct {
	mu        sync.Mutex
	published map[string]time.Time // run id -> STOPPED (failing) published
	latencies []time.Duration
	alerts    int
}

func run() error {
	bin := flag.String("exitwatch", "", "taskyard-exitwatch binary (required)")
	active := flag.Int("active", 10000, "active runs kept open")
	rate := flag.Int("rate", 1000, "task state events per second")
	dur := flag.Duration("duration", 60*time.Second, "measured duration")
	failShare := flag.Int("fail-every", 10, "every n-th finished run fails (exit 1)")
	workers := flag.Int("workers", 8, "exitwatch --workers")
	flag.Parse()
	if *bin == "" {
		return errors.New("--exitwatch is required")
	}
	dir, err := os.MkdirTemp("", "bench-exitwatch")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{StoreDir: dir})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	if err := natsconn.Ensure(ctx, js, v1.StoreOptions{}); err != nil {
		return err
	}
	// A schedule so alerts carry runbooks like in production.
	spec := &v1.ScheduleSpec{Name: "bench", Cluster: "batch", Type: "manual",
		Containers: []*v1.Container{{Name: "app", Image: "x", Memory: 128, Essential: true}},
		Timing:     &v1.Timing{TaskCount: 1, Concurrency: "allow", Enabled: true},
		Alerts:     &v1.AlertSettings{Runbook: "https://runbooks.example.com/bench"}}
	data, _ := proto.Marshal(spec)
	kvs, err := js.KeyValue(ctx, "taskyard-schedules")
	if err != nil {
		return err
	}
	if _, err := kvs.Put(ctx, "bench", data); err != nil {
		return err
	}

	cmd := exec.CommandContext(ctx, *bin, "--nats-url", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--instance", "bench",
		"--workers", strconv.Itoa(*workers), "--log-level", "error", "--summary-every", "0", "--overlap-runs", "1000000")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	st := &stats{published: map[string]time.Time{}}
	sub, err := nc.Subscribe("taskyard.alert.>", func(m *nats.Msg) {
		now := time.Now()
		a := &v1.Alert{}
		if proto.Unmarshal(m.Data, a) != nil || a.GetKind() != "run_failed" {
			return
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		st.alerts++
		if t, ok := st.published[a.GetRunId()]; ok {
			st.latencies = append(st.latencies, now.Sub(t))
			delete(st.published, a.GetRunId())
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()

	subj := v1.Subjects{}
	seq := 0
	newRun := func() string {
		seq++
		return fmt.Sprintf("bench-%09d", seq)
	}
	pub := func(subject string, m proto.Message, id string) error {
		msg, err := v1.NewMsg(ctx, subject, m)
		if err != nil {
			return err
		}
		_, err = js.PublishMsgAsync(msg, jetstream.WithMsgID(id))
		return err
	}
	task := func(runID, status string, version int64, exit int32) *v1.TaskStateChanged {
		now := timestamppb.Now()
		ev := &v1.TaskStateChanged{TaskArn: "arn:aws:ecs:eu-west-1:123456789012:task/batch/" + runID, RunId: runID, Schedule: "bench", Cluster: "batch",
			LastStatus: status, Version: version, Source: "bench", EventTime: now, CreatedAt: now}
		if status == "RUNNING" || status == "STOPPED" {
			ev.StartedAt = now
		}
		if status == "STOPPED" {
			ev.StoppedAt, ev.StopCode = now, "EssentialContainerExited"
			ev.Containers = []*v1.ContainerState{{Name: "app", ExitCode: exit, HasExitCode: true, LastStatus: "STOPPED"}}
		}
		return ev
	}
	start := func(runID string) error {
		now := timestamppb.Now()
		return pub(subj.RunDispatched("bench"), &v1.RunDispatched{RunId: runID, Schedule: "bench", Cluster: "batch", ScheduledAt: now, DispatchedAt: now,
			Trigger: v1.Trigger_TRIGGER_MANUAL, Runner: "ecs", TaskIds: []string{"arn:aws:ecs:eu-west-1:123456789012:task/batch/" + runID}, TaskCount: 1}, runID)
	}
	waitIdle := func(limit time.Duration) (uint64, error) {
		deadline := time.Now().Add(limit)
		for {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(limit):
				return 0, errors.New("async publishes not acknowledged")
			}
			c, err := js.Consumer(ctx, "RUNS", "exitwatch-tracker")
			if err == nil {
				info, err := c.Info(ctx)
				if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
					return 0, nil
				} else if err == nil && time.Now().After(deadline) {
					return info.NumPending + uint64(info.NumAckPending), nil
				}
			}
			if time.Now().After(deadline) {
				return 0, errors.New("exitwatch consumer not found")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Warm-up: open the active runs.
	fmt.Printf("opening %d active runs...\n", *active)
	t0 := time.Now()
	var open []string
	for range *active {
		id := newRun()
		if err := start(id); err != nil {
			return err
		}
		if err := pub(subj.Task("batch", "bench"), task(id, "RUNNING", 3, 0), id+":3"); err != nil {
			return err
		}
		open = append(open, id)
	}
	if left, err := waitIdle(5 * time.Minute); err != nil || left > 0 {
		return fmt.Errorf("warm-up not absorbed: %d left, %v", left, err)
	}
	fmt.Printf("warm-up absorbed in %s (%d dispatch + %d task events)\n", time.Since(t0).Round(time.Millisecond), *active, *active)

	// Measured phase: each tick publishes rate/100 events: new runs go
	// PROVISIONING, PENDING, RUNNING; for every new run one old run stops.
	type pending struct {
		id   string
		next int
	}
	var fresh []pending
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	perTick := *rate / 100
	sent, finished := 0, 0
	t1 := time.Now()
	end := t1.Add(*dur)
	carry := 0
	for now := range tick.C {
		if now.After(end) {
			break
		}
		budget := perTick + carry
		carry = 0
		for budget > 0 {
			// One stop per three progress events keeps the active count.
			if sent%4 == 3 && len(open) > 0 {
				id := open[0]
				open = open[1:]
				finished++
				exit := int32(0)
				if finished%*failShare == 0 {
					exit = 1
					st.mu.Lock()
					st.published[id] = time.Now()
					st.mu.Unlock()
				}
				if err := pub(subj.Task("batch", "bench"), task(id, "STOPPED", 5, exit), id+":5"); err != nil {
					return err
				}
			} else {
				if len(fresh) == 0 || fresh[len(fresh)-1].next == 3 && len(fresh) < 3 {
					id := newRun()
					if err := start(id); err != nil {
						return err
					}
					fresh = append(fresh, pending{id: id})
				}
				p := &fresh[0]
				status := []string{"PROVISIONING", "PENDING", "RUNNING"}[p.next]
				if err := pub(subj.Task("batch", "bench"), task(p.id, status, int64(p.next+1), 0), p.id+":"+strconv.Itoa(p.next+1)); err != nil {
					return err
				}
				p.next++
				if p.next == 3 {
					open = append(open, p.id)
					fresh = fresh[1:]
				}
			}
			sent++
			budget--
		}
	}
	elapsed := time.Since(t1)
	left, err := waitIdle(30 * time.Second)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // last alerts
	hwm, rss := procMem(cmd.Process.Pid)

	st.mu.Lock()
	lat := append([]time.Duration(nil), st.latencies...)
	missing := len(st.published)
	st.mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("task events: %d in %s (%.0f/s), runs finished %d, active at end %d, consumer backlog after 30s: %d\n",
		sent, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds(), finished, len(open)+len(fresh), left)
	fmt.Printf("run_failed alerts: %d measured, %d missing; event -> alert p50 %s, p99 %s, max %s\n",
		len(lat), missing, pct(0.50).Round(100*time.Microsecond), pct(0.99).Round(100*time.Microsecond), pct(1).Round(100*time.Microsecond))
	fmt.Printf("exitwatch memory: VmHWM %s, VmRSS %s\n", hwm, rss)
	return nil
}

// procMem reads peak and current resident memory of pid.
func procMem(pid int) (string, string) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "?", "?"
	}
	var hwm, rss string
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			hwm = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rss = strings.TrimSpace(v)
		}
	}
	return hwm, rss
}
