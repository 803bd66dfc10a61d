package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskyard/taskyard/services/kit/schedule"
)

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check schedule and cluster profile files",
		Long: `Check schedule files and cluster profiles (files or directories, searched
recursively for *.yml and *.yaml). Every problem is reported as
file:line:column: field: message, and the command exits 1. When every file
is valid it prints one line per schedule: name, expression, time zone and the
task size that would be registered (Fargate size when its cluster profile
runs on Fargate and the profile was among the paths).`,
		Example: `  taskyard schedule validate examples/schedules examples/clusters
  taskyard schedule validate jobs/nightly-report.yml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			schedules, profiles, err := schedule.LoadPaths(args...)
			if err != nil {
				var probs schedule.Problems
				if errors.As(err, &probs) {
					for _, p := range probs {
						fmt.Fprintln(g.out, p.String())
					}
					return &exitError{code: 1, msg: fmt.Sprintf("%d problem(s) found", len(probs))}
				}
				return &exitError{code: 1, msg: err.Error()}
			}
			byName := map[string]*schedule.Profile{}
			for _, p := range profiles {
				byName[p.Name] = p
			}
			for _, s := range schedules {
				fmt.Fprintln(g.out, summary(s, byName[s.Cluster]))
			}
			if len(schedules) == 0 {
				fmt.Fprintf(g.out, "no schedules found (%d cluster profile(s) valid)\n", len(profiles))
			}
			return nil
		},
	}
}

func summary(s *schedule.Schedule, p *schedule.Profile) string {
	expr := "manual"
	if s.Timing.Expression != nil {
		expr = s.Timing.Expression.String()
	}
	size := fmt.Sprintf("containers cpu=%d memory=%dMiB", s.CPUSum(), s.MemorySum())
	if p != nil {
		cpu, mem, err := s.TaskSize(p)
		switch {
		case err != nil:
			size = "task size: " + err.Error()
		case p.IsFargate():
			size = fmt.Sprintf("fargate cpu=%d memory=%dMiB", cpu, mem)
		case cpu != 0 || mem != 0:
			size = fmt.Sprintf("task cpu=%d memory=%dMiB", cpu, mem)
		}
	}
	state := ""
	if !s.Timing.Enabled {
		state = " (disabled)"
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s%s", s.Name, expr, s.Timing.Timezone, size, state)
}

func newNextCmd(g *globals) *cobra.Command {
	var (
		exprFlag string
		tzFlag   string
		fromFlag string
		n        int
	)
	cmd := &cobra.Command{
		Use:   "next (--expr EXPR [--tz ZONE] | FILE | NAME)",
		Short: "Print the next fire times of an expression, a schedule file or an applied schedule",
		Long: `Print the next N fire times, one per line, in RFC3339 with the zone's
offset. --from is exclusive (a fire exactly at --from is not printed) and
defaults to now.

  --expr EXPR [--tz ZONE]   an expression, evaluated locally
  FILE                      a schedule file, evaluated locally (rate() anchored at
                            the Unix epoch, as a newly applied schedule would be
                            unless it keeps an earlier anchor)
  NAME                      an applied schedule, asked of the scheduler over NATS`,
		Example: `  taskyard schedule next --expr 'cron(0 12 ? * MON-FRI *)' --tz Asia/Tokyo -n 3
  taskyard schedule next examples/schedules/hello.yml
  taskyard schedule next nightly-report --from 2026-12-31T00:00:00Z`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || n > 10000 {
				return usageError("-n: %d is not between 1 and 10000", n)
			}
			from := time.Now()
			if fromFlag != "" {
				t, err := time.Parse(time.RFC3339, fromFlag)
				if err != nil {
					return usageError("--from: %q is not an RFC3339 time (2026-11-23T12:00:00+09:00)", fromFlag)
				}
				from = t
			}
			var expr schedule.Expr
			switch {
			case exprFlag != "" && len(args) > 0:
				return usageError("give either --expr or a FILE/NAME, not both")
			case exprFlag != "":
				loc, err := time.LoadLocation(tzFlag)
				if err != nil {
					return usageError("--tz: unknown time zone %q", tzFlag)
				}
				expr, err = schedule.ParseExpr(exprFlag, loc, time.Time{})
				if err != nil {
					return usageError("--expr: %v", err)
				}
			case len(args) == 1:
				if _, err := os.Stat(args[0]); err != nil {
					// Not a file: an applied schedule's name.
					return scheduleNextRemote(cmd, g, args[0], n, from)
				}
				s, err := schedule.LoadSchedule(args[0])
				if err != nil {
					return &exitError{code: 1, msg: err.Error()}
				}
				if s.Timing.Expression == nil {
					return &exitError{code: 1, msg: fmt.Sprintf("%s: schedule %s is manual: it has no fire times", args[0], s.Name)}
				}
				expr = s.Timing.Expression
			default:
				return usageError("give --expr EXPR, a schedule FILE or an applied schedule NAME")
			}
			t := from
			for i := 0; i < n; i++ {
				t = expr.Next(t)
				if t.IsZero() {
					if i == 0 {
						fmt.Fprintln(g.errOut, "no fire times after", from.Format(time.RFC3339))
					}
					break
				}
				fmt.Fprintln(g.out, t.Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&exprFlag, "expr", "", "expression: rate(...), cron(...), at(...) or a 5-field crontab")
	cmd.Flags().StringVar(&tzFlag, "tz", "UTC", "IANA time zone of --expr")
	cmd.Flags().StringVar(&fromFlag, "from", "", "RFC3339 time to start after (exclusive); default now")
	cmd.Flags().IntVarP(&n, "count", "n", 5, "how many fire times")
	return cmd
}
