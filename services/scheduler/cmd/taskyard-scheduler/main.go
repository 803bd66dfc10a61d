// Command taskyard-scheduler fires schedules on time: it watches KV
// taskyard-schedules, keeps one timer over the next fire of every schedule,
// and — on the replica holding the leader lease — dispatches each fire to
// ECS RunTask or to local processes, publishing every outcome. Flags have
// TASKYARD_* environment fallbacks; run with --help for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/telemetry"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "taskyard-scheduler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("taskyard-scheduler", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: taskyard-scheduler [flags]

Dispatches the schedules applied with 'taskyard schedule apply' (KV
<prefix>-schedules). Run two or more replicas: the one holding the lease in
KV <prefix>-leases dispatches; the others take over within --lease-ttl and
catch up missed fires per schedule (catchUp, startingDeadline).

Publishes <prefix>.run.{dispatched,skipped,dispatch_failed}.<schedule> and,
with the exec runner, <prefix>.task.<cluster>.<schedule>. Answers
<prefix>.ctl.scheduler.{list,get,next,apply,create,prune,enable,disable,trigger}.
Serves GET /healthz, /readyz, /metrics on --http-listen.

Flags (each also read from the TASKYARD_* variable named in its usage):
`)
		fs.PrintDefaults()
	}
	var cfg app.Config
	f := config.New(fs, nil)
	cfg.Register(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	level, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log := logging.New(os.Stderr, level, app.Daemon)
	tel, err := telemetry.New(ctx, telemetry.Options{Service: "taskyard-scheduler", Instance: cfg.Instance})
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	if err := app.Run(ctx, cfg, app.Deps{Log: log, Telemetry: tel}); err != nil {
		log.Error("scheduler stopped", "err", err)
		return err
	}
	return nil
}
