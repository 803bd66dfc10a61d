package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
)

// globals are the flags every subcommand shares: how to reach NATS.
type globals struct {
	NATS    natsconn.Config
	Timeout time.Duration

	out, errOut io.Writer
	flags       *config.Flags
}

// connect dials NATS for a one-shot CLI command (bounded by --timeout).
func (g *globals) connect(ctx context.Context) (*nats.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	return natsconn.Connect(cctx, g.NATS, "taskyard-cli", logging.Discard())
}

// subjects builds subjects under the configured prefix.
func (g *globals) subjects() v1.Subjects { return v1.Subjects{Prefix: g.NATS.Prefix} }

func newRootCmd(out, errOut io.Writer) *cobra.Command {
	g := &globals{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:   "taskyard",
		Short: "Run scheduled jobs on ECS and watch over them",
		Long: `taskyard fires scheduled jobs on AWS ECS (or local runners), tells you the
moment one fails or does not run, routes every line they log, and exports the
numbers. This CLI talks to the taskyard daemons over NATS.

Every flag can also be set by its TASKYARD_* environment variable
(--nats-url is TASKYARD_NATS_URL); a flag given on the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)

	fs := flag.NewFlagSet("taskyard", flag.ContinueOnError)
	g.flags = config.New(fs, nil)
	g.NATS.Register(g.flags)
	g.flags.Duration(&g.Timeout, "timeout", 10*time.Second, "how long a command waits for NATS and for replies")
	root.PersistentFlags().AddGoFlagSet(fs)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		set := map[string]bool{}
		cmd.Flags().Visit(func(f *pflagFlag) { set[f.Name] = true })
		if err := g.flags.ApplyEnv(set); err != nil {
			return err
		}
		var p config.Problems
		g.NATS.Validate(&p)
		p.Check(g.Timeout > 0, "timeout: must be positive")
		return p.Err()
	}

	schedule := &cobra.Command{
		Use:   "schedule",
		Short: "Validate, apply and inspect schedules",
	}
	schedule.AddCommand(newValidateCmd(g), newNextCmd(g))
	root.AddCommand(schedule, newEventsCmd(g), newDevCmd(g))

	addSchedulerCommands(root, schedule, g)
	addExitwatchCommands(root, schedule, g)
	addLogrouterCommands(root, schedule, g)
	return root
}

// usageError is returned for wrong arguments (exit 2, like flag errors).
func usageError(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}
