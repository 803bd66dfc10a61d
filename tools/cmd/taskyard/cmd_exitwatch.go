package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// addExitwatchCommands adds `taskyard history` and `taskyard status`.
func addExitwatchCommands(root, _ *cobra.Command, g *globals) {
	root.AddCommand(newHistoryCmd(g), newStatusCmd(g))
}

func newHistoryCmd(g *globals) *cobra.Command {
	var n int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List the runs of a schedule or ping check with their outcome",
		Long: `Read the run records of NAME from KV <prefix>-runs (written by exitwatch,
kept 30 days by default) and print the newest first: run id, scheduled time,
start, duration, outcome, exit codes and the reason of the verdict.

Fires judged missed show as "missed", skipped fires as "skipped", runs
still going as "running".`,
		Example: `  taskyard history nightly-report
  taskyard history nightly-report -n 50 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || n > 10000 {
				return usageError("-n: %d is not between 1 and 10000", n)
			}
			if err := v1.CheckName(args[0]); err != nil {
				return usageError("NAME: %v", err)
			}
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), g.Timeout)
			defer cancel()
			runs, err := history(ctx, nc, g.NATS.Prefix, args[0], n)
			if err != nil {
				return err
			}
			if asJSON {
				for _, r := range runs {
					b, err := protojson.Marshal(r)
					if err != nil {
						return err
					}
					fmt.Fprintln(g.out, string(b))
				}
				return nil
			}
			if len(runs) == 0 {
				fmt.Fprintf(g.errOut, "no runs of %s recorded\n", args[0])
				return nil
			}
			printHistory(g.out, runs)
			return nil
		},
	}
	cmd.Flags().IntVarP(&n, "n", "n", 20, "how many runs to show")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one RunRecord per line as protojson")
	return cmd
}

// history reads the newest n run records of name from KV.
func history(ctx context.Context, nc *nats.Conn, prefix, name string, n int) ([]*v1.RunRecord, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	bucket := v1.Buckets(prefix).Runs
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open KV %s (is exitwatch running against this NATS?): %w", bucket, err)
	}
	// Run ids start with the name cut to 28 characters (scheduled runs) or
	// 40 (ping runs with rid); filter on the shorter prefix, then on the
	// record's schedule.
	short := name
	if len(short) > 28 {
		short = short[:28]
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	var keys []string
	for k := range lister.Keys() {
		if strings.HasPrefix(k, short) {
			keys = append(keys, k)
		}
	}
	var out []*v1.RunRecord
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read run %s: %w", k, err)
		}
		r := &v1.RunRecord{}
		if err := proto.Unmarshal(e.Value(), r); err != nil {
			return nil, fmt.Errorf("decode run %s: %w", k, err)
		}
		if r.GetSchedule() == name {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return runTime(out[i]).After(runTime(out[j])) })
	if len(out) > n {
		out = out[:n]
	}
	return out, nil
}

func runTime(r *v1.RunRecord) time.Time {
	for _, t := range []*timestamppb.Timestamp{r.GetScheduledAt(), r.GetDispatchedAt(), r.GetStartedAt(), r.GetFinishedAt()} {
		if t != nil {
			return t.AsTime()
		}
	}
	return time.Time{}
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
}

// outcomeText is the OUTCOME column.
func outcomeText(r *v1.RunRecord) string {
	switch {
	case r.GetOutcome() != v1.Outcome_OUTCOME_UNSPECIFIED:
		return strings.ToLower(strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	case strings.HasPrefix(r.GetReason(), "missed"):
		return "missed"
	case strings.HasPrefix(r.GetReason(), "skipped"):
		return "skipped"
	case r.GetStartedAt() != nil:
		return "running"
	}
	return "pending"
}

func exitCodes(r *v1.RunRecord) string {
	var parts []string
	for _, c := range r.GetContainers() {
		if !c.GetEssential() && c.GetExitCode() == 0 {
			continue
		}
		if c.GetHasExitCode() {
			parts = append(parts, c.GetName()+"="+strconv.Itoa(int(c.GetExitCode())))
		} else {
			parts = append(parts, c.GetName()+"=-")
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func printHistory(w io.Writer, runs []*v1.RunRecord) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN ID\tSCHEDULED\tSTARTED\tDURATION\tOUTCOME\tEXIT CODES\tREASON")
	for _, r := range runs {
		dur := "-"
		if r.GetFinishedAt() != nil && r.GetStartedAt() != nil {
			dur = r.GetFinishedAt().AsTime().Sub(r.GetStartedAt().AsTime()).Round(time.Second).String()
		}
		reason := r.GetReason()
		if len(reason) > 80 {
			reason = reason[:79] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.GetRunId(), fmtTime(r.GetScheduledAt()), fmtTime(r.GetStartedAt()), dur, outcomeText(r), exitCodes(r), reason)
	}
	_ = tw.Flush()
}

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every schedule and ping check: up, late, down or paused",
		Long: `Ask exitwatch (over <prefix>.ctl.exitwatch.status) for its view of every
schedule and ping check:

  up      the last run succeeded and nothing is overdue
  late    the expected fire or ping is due but within its deadline and grace
  down    the last run failed, a fire was missed, or nothing succeeded
          within expectations.succeedWithin
  paused  the schedule is disabled
  new     nothing ran yet

with the last run (its outcome) and the next expected run.`,
		Example: `  taskyard status
  taskyard status --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			subj := g.subjects().Ctl("exitwatch", "status")
			ctx, cancel := context.WithTimeout(cmd.Context(), g.Timeout)
			defer cancel()
			msg, err := nc.RequestWithContext(ctx, subj, nil)
			if errors.Is(err, nats.ErrNoResponders) {
				return fmt.Errorf("no exitwatch answered on %s: is it running against this NATS?", subj)
			}
			if err != nil {
				return fmt.Errorf("request %s: %w", subj, err)
			}
			var rep v1.StatusReply
			if err := proto.Unmarshal(msg.Data, &rep); err != nil {
				return fmt.Errorf("decode status reply: %w", err)
			}
			if rep.GetError() != "" {
				return errors.New(rep.GetError())
			}
			if asJSON {
				for _, e := range rep.GetEntries() {
					b, err := protojson.Marshal(e)
					if err != nil {
						return err
					}
					fmt.Fprintln(g.out, string(b))
				}
				return nil
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tSTATE\tLAST RUN\tLAST OUTCOME\tNEXT RUN\tDETAIL")
			for _, e := range rep.GetEntries() {
				outcome := "-"
				if e.GetLastOutcome() != v1.Outcome_OUTCOME_UNSPECIFIED {
					outcome = strings.ToLower(strings.TrimPrefix(e.GetLastOutcome().String(), "OUTCOME_"))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetName(), e.GetKind(), e.GetState(), fmtTime(e.GetLastRun()), outcome, fmtTime(e.GetNextRun()), e.GetDetail())
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one WatchStatus per line as protojson")
	return cmd
}
