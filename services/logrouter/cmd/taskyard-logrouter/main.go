// Command taskyard-logrouter receives logs over the Fluent Forward protocol
// (FireLens, Fluent Bit, Docker's fluentd driver) and HTTP NDJSON, tags
// them, and routes them to S3, Firehose, Datadog, files and stdout through
// per-output disk spools. See services/logrouter/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/telemetry"
	"github.com/taskyard/taskyard/services/logrouter/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "taskyard-logrouter:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	fs := flag.NewFlagSet("taskyard-logrouter", flag.ContinueOnError)
	f := config.New(fs, nil)
	var cfg app.Config
	cfg.Register(f)
	var level, memLimit string
	f.String(&level, "log-level", "info", "log level: debug, info, warn, error")
	f.String(&memLimit, "memory-limit", "128MiB", "soft limit of the Go heap (runtime/debug.SetMemoryLimit; the GC works harder near it); 0 turns it off; GOMEMLIMIT, when set, wins")
	if err := f.Parse(os.Args[1:]); err != nil {
		return err
	}
	lvl, err := logging.ParseLevel(level)
	if err != nil {
		return err
	}
	log := logging.New(os.Stderr, lvl, "logrouter")
	if os.Getenv("GOMEMLIMIT") == "" {
		n, err := app.ParseSize(memLimit)
		if err != nil {
			return fmt.Errorf("memory-limit: %w", err)
		}
		if n > 0 {
			debug.SetMemoryLimit(n)
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	instance := cfg.Instance
	if instance == "" {
		instance, _ = os.Hostname()
	}
	tel, err := telemetry.New(ctx, telemetry.Options{Service: "taskyard-logrouter", Instance: instance})
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.Background())
	return app.Run(ctx, cfg, app.Deps{Log: log, Telemetry: tel})
}
