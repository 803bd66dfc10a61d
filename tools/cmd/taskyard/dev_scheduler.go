package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/lifecycle"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// devScheduler runs the scheduler with the exec runner, the cluster
// profiles of env.ClustersDir, job logs forwarded to env.ForwardAddr (the
// logrouter) when set, and the schedules of env.SchedulesDir applied at
// start (creating the new ones).
func devScheduler(env devEnv) (lifecycle.Actor, error) {
	var cfg app.Config
	cfg.NATS = env.NATS
	cfg.Runner = app.RunnerExec
	cfg.ClustersDir = env.ClustersDir
	cfg.Instance = "dev"
	cfg.HTTPListen = env.SchedulerHTTP
	cfg.LeaseTTL = 3 * time.Second
	cfg.ReleaseLease = true
	cfg.ForwardAddr = env.ForwardAddr
	cfg.KillGrace = 10 * time.Second
	cfg.ClaimAhead = time.Second
	cfg.LogLevel = "info"
	cfg.ECS.RunTaskRate, cfg.ECS.RunTaskBurst = 20, 20
	if err := cfg.Validate(); err != nil {
		return nil, err
	}

	var specs []*v1.ScheduleSpec
	if env.SchedulesDir != "" {
		paths := []string{env.SchedulesDir}
		if env.ClustersDir != "" {
			paths = append(paths, env.ClustersDir)
		}
		schedules, _, err := schedule.LoadPaths(paths...)
		if err != nil {
			return nil, fmt.Errorf("schedules in %s: %w", env.SchedulesDir, err)
		}
		for _, s := range schedules {
			specs = append(specs, s.ToProto())
		}
	}

	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- app.Run(ctx, cfg, app.Deps{Log: env.Log}) }()
		if len(specs) > 0 {
			if err := devApply(ctx, env, specs); err != nil {
				env.Log.Error("apply dev schedules", "dir", env.SchedulesDir, "err", err)
			}
		}
		return <-errc
	}, nil
}

// devApply creates or updates specs through the scheduler's create subject,
// waiting for the scheduler to answer.
func devApply(ctx context.Context, env devEnv, specs []*v1.ScheduleSpec) error {
	nc, err := natsconn.Connect(ctx, env.NATS, "taskyard-dev-apply", env.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	data, err := proto.Marshal(&v1.ApplyRequest{Schedules: specs, AppliedBy: "taskyard dev"})
	if err != nil {
		return err
	}
	subject := v1.Subjects{Prefix: env.NATS.Prefix}.Ctl("scheduler", app.VerbCreate)
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		m, err := nc.RequestWithContext(rctx, subject, data)
		cancel()
		if errors.Is(err, nats.ErrNoResponders) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		if err != nil {
			return err
		}
		var reply v1.ApplyReply
		if err := proto.Unmarshal(m.Data, &reply); err != nil {
			return err
		}
		if reply.Error != "" {
			return errors.New(reply.Error)
		}
		env.Log.Info("dev schedules applied", "schedules", len(specs), "changes", len(reply.Changes))
		return nil
	}
}
