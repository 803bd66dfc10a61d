// Command taskyard-exitwatch watches every run to its verdict: it turns ECS
// task state changes (SQS fed by EventBridge, ECS polling, or local runners
// on NATS) into one RunFinished per run, applies the watch rules (failed,
// failed to start, stuck, overrun, missed, skipped, no success, silent,
// overlap, cluster capacity, recovery) and delivers the alerts to Slack,
// webhooks and the log. Flags have TASKYARD_* environment fallbacks; run
// with --help for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/taskyard/taskyard/services/exitwatch/app"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/telemetry"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "taskyard-exitwatch:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("taskyard-exitwatch", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: taskyard-exitwatch [flags]

Follows every run from its dispatch decision to exactly one verdict, kept in
KV <prefix>-runs, and raises alerts. Run two replicas: they share the event
consumers and decide with compare-and-set.

Reads   <prefix>.run.{dispatched,skipped,dispatch_failed}.*, <prefix>.task.>,
        <prefix>.logs.stats.>, KV <prefix>-schedules, and the SQS queue of
        --sqs-queue-url / ECS clusters of --ecs-poll-clusters.
Writes  <prefix>.task.<cluster>.<schedule> (from SQS, polling and pings),
        <prefix>.run.finished.<schedule>, <prefix>.run.missed.<schedule>,
        <prefix>.alert.<severity>.<kind>.
Answers <prefix>.ctl.exitwatch.status.
Serves  GET /healthz, /readyz, /metrics and the ping API
        (GET|POST /ping/[<key>/]<check>[/start|/fail|/<exit-status>][?rid=])
        on --http-listen.

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
	tel, err := telemetry.New(ctx, telemetry.Options{Service: "taskyard-exitwatch", Instance: cfg.Instance})
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	if err := app.Run(ctx, cfg, app.Deps{Log: log, Telemetry: tel}); err != nil {
		log.Error("exitwatch stopped", "err", err)
		return err
	}
	return nil
}
