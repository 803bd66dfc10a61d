package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// addSchedulerCommands adds the scheduler's subcommands: schedule apply,
// diff, list, enable, disable, render, and run.
func addSchedulerCommands(root, sched *cobra.Command, g *globals) {
	sched.AddCommand(newApplyCmd(g), newDiffCmd(g), newListCmd(g), newEnableCmd(g, true), newEnableCmd(g, false), newRenderCmd(g))
	root.AddCommand(newRunCmd(g))
}

// ctl sends a control request to the scheduler and decodes the reply.
func ctl(ctx context.Context, g *globals, nc *nats.Conn, verb string, req, reply proto.Message) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	subject := g.subjects().Ctl("scheduler", verb)
	rctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &exitError{code: 1, msg: fmt.Sprintf("no scheduler answers on %s (is taskyard-scheduler running?)", subject)}
	case errors.Is(err, context.DeadlineExceeded) && verb == app.VerbTrigger:
		return &exitError{code: 1, msg: fmt.Sprintf("no scheduler leader answered on %s within %s (a failover may be in progress)", subject, g.Timeout)}
	case err != nil:
		return fmt.Errorf("request %s: %w", subject, err)
	}
	if err := proto.Unmarshal(m.Data, reply); err != nil {
		return fmt.Errorf("decode reply on %s: %w", subject, err)
	}
	return nil
}

func whoami() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// loadForApply loads schedule files (and the cluster profiles among them)
// and converts them to specs. Any problem in any file fails the whole set.
func loadForApply(g *globals, paths []string) ([]*v1.ScheduleSpec, error) {
	schedules, _, err := schedule.LoadPaths(paths...)
	if err != nil {
		var probs schedule.Problems
		if errors.As(err, &probs) {
			for _, p := range probs {
				fmt.Fprintln(g.errOut, p.String())
			}
			return nil, &exitError{code: 1, msg: fmt.Sprintf("%d problem(s) found; nothing applied", len(probs))}
		}
		return nil, &exitError{code: 1, msg: err.Error()}
	}
	if len(schedules) == 0 {
		return nil, &exitError{code: 1, msg: "no schedule files found in " + strings.Join(paths, ", ")}
	}
	specs := make([]*v1.ScheduleSpec, 0, len(schedules))
	for _, s := range schedules {
		specs = append(specs, s.ToProto())
	}
	return specs, nil
}

type applyOpts struct {
	create, prune, dryRun bool
}

// apply sends the schedules in paths on the subject the options allow and
// prints the diff. It is shared by `schedule apply` and `schedule diff`.
func apply(cmd *cobra.Command, g *globals, paths []string, o applyOpts) error {
	specs, err := loadForApply(g, paths)
	if err != nil {
		return err
	}
	nc, err := g.connect(cmd.Context())
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx := cmd.Context()

	req := &v1.ApplyRequest{Schedules: specs, DryRun: o.dryRun, AppliedBy: whoami()}
	verb := app.VerbApply
	if o.create {
		verb = app.VerbCreate
	}
	if o.prune {
		verb = app.VerbPrune
		var lr v1.ListReply
		if err := ctl(ctx, g, nc, app.VerbList, &v1.NameRequest{}, &lr); err != nil {
			return err
		}
		if lr.Error != "" {
			return &exitError{code: 1, msg: lr.Error}
		}
		local := map[string]bool{}
		for _, s := range specs {
			local[s.Name] = true
		}
		remote := map[string]bool{}
		for _, st := range lr.Schedules {
			remote[st.Spec.GetName()] = true
			if !local[st.Spec.GetName()] {
				req.Delete = append(req.Delete, st.Spec.GetName())
			}
		}
		if !o.create {
			var missing []string
			for _, s := range specs {
				if !remote[s.Name] {
					missing = append(missing, s.Name)
				}
			}
			if len(missing) > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("schedule(s) %s do not exist; creating needs --create; nothing applied", strings.Join(missing, ", "))}
			}
		}
	}
	var reply v1.ApplyReply
	if err := ctl(ctx, g, nc, verb, req, &reply); err != nil {
		return err
	}
	if reply.Error != "" {
		return &exitError{code: 1, msg: reply.Error + "\nnothing applied"}
	}
	fmt.Fprint(g.out, app.FormatChanges(reply.Changes))
	switch {
	case len(reply.Changes) == 0:
		fmt.Fprintf(g.out, "no changes (%d schedule(s) up to date)\n", len(specs))
	case o.dryRun:
		fmt.Fprintf(g.out, "dry run: %d change(s), nothing applied\n", len(reply.Changes))
	default:
		fmt.Fprintf(g.out, "applied %d change(s)\n", len(reply.Changes))
	}
	return nil
}

func newApplyCmd(g *globals) *cobra.Command {
	var o applyOpts
	cmd := &cobra.Command{
		Use:   "apply PATH...",
		Short: "Apply schedule files to the scheduler (all or nothing)",
		Long: `Validate schedule files (files or directories; cluster profiles in a
"clusters" directory among them are used for the cross checks), print the
field-level difference with what the scheduler holds, and apply it.

Every file must be valid or nothing is applied. Updating existing schedules
needs no flag (subject <prefix>.ctl.scheduler.apply); creating new ones needs
--create (subject ...create); deleting the schedules that are no longer in
the files needs --prune (subject ...prune). The separate subjects let NATS
permissions grant each right separately.`,
		Example: `  taskyard schedule apply jobs/ --dry-run
  taskyard schedule apply jobs/nightly-report.yml
  taskyard schedule apply jobs/ clusters/ --create --prune`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return apply(cmd, g, args, o) },
	}
	cmd.Flags().BoolVar(&o.create, "create", false, "allow creating schedules that do not exist yet")
	cmd.Flags().BoolVar(&o.prune, "prune", false, "delete applied schedules that are not in the files")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print the changes without applying them")
	return cmd
}

func newDiffCmd(g *globals) *cobra.Command {
	var prune bool
	cmd := &cobra.Command{
		Use:   "diff PATH...",
		Short: "Print what `schedule apply --create` would change",
		Long: `Print the field-level difference between schedule files and the schedules
the scheduler holds (a dry run of apply on the create subject; with --prune,
on the prune subject, also listing schedules that are not in the files).`,
		Example: `  taskyard schedule diff jobs/`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return apply(cmd, g, args, applyOpts{create: true, prune: prune, dryRun: true})
		},
	}
	cmd.Flags().BoolVar(&prune, "prune", false, "also show the schedules apply --prune would delete")
	return cmd
}

func formatTime(ts *timestamppb.Timestamp, loc *time.Location) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().In(loc).Format("2006-01-02 15:04:05 MST")
}

func outcomeName(o v1.Outcome) string {
	if o == v1.Outcome_OUTCOME_UNSPECIFIED {
		return "-"
	}
	return strings.TrimPrefix(o.String(), "OUTCOME_")
}

func newListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List applied schedules with their next and last fire",
		Long: `List the schedules the scheduler holds: name, expression, time zone,
enabled, next fire, last fire and the last run's outcome when known. Times are
shown in each schedule's time zone.`,
		Example: `  taskyard schedule list
  taskyard schedule list --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			var lr v1.ListReply
			if err := ctl(cmd.Context(), g, nc, app.VerbList, &v1.NameRequest{}, &lr); err != nil {
				return err
			}
			if lr.Error != "" {
				return &exitError{code: 1, msg: lr.Error}
			}
			if asJSON {
				return printJSON(g, &lr)
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tEXPRESSION\tTZ\tENABLED\tNEXT\tLAST\tOUTCOME")
			for _, st := range lr.Schedules {
				spec := st.Spec
				tz := spec.GetTiming().GetTimezone()
				loc, err := time.LoadLocation(tz)
				if err != nil || tz == "" {
					loc, tz = time.UTC, "UTC"
				}
				expr := spec.GetTiming().GetExpression()
				if expr == "" {
					expr = "(manual)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\n", spec.GetName(), expr, tz, spec.GetTiming().GetEnabled(),
					formatTime(st.NextFire, loc), formatTime(st.LastFire, loc), outcomeName(st.LastOutcome))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the reply as JSON")
	return cmd
}

func printJSON(g *globals, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.out, string(b))
	return err
}

func newEnableCmd(g *globals, on bool) *cobra.Command {
	verb, word := app.VerbEnable, "Enable"
	if !on {
		verb, word = app.VerbDisable, "Disable"
	}
	return &cobra.Command{
		Use:   strings.ToLower(word) + " NAME",
		Short: word + " an applied schedule",
		Long: word + ` an applied schedule (sets schedule.enabled in KV; the scheduler reacts
within a second). A disabled schedule's fires are published as RunSkipped
(reason disabled); ` + "`taskyard run`" + ` still runs it.`,
		Example: "  taskyard schedule " + strings.ToLower(word) + " nightly-report",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := v1.CheckName(args[0]); err != nil {
				return usageError("NAME: %v", err)
			}
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			var ack v1.AckReply
			if err := ctl(cmd.Context(), g, nc, verb, &v1.NameRequest{Name: args[0], RequestedBy: whoami()}, &ack); err != nil {
				return err
			}
			if ack.Error != "" {
				return &exitError{code: 1, msg: ack.Error}
			}
			fmt.Fprintf(g.out, "%s: %sd\n", args[0], strings.ToLower(word))
			return nil
		},
	}
}

func newRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run NAME",
		Short: "Run an applied schedule now (manual trigger)",
		Long: `Ask the scheduler leader to run NAME now. The run has trigger "manual" and
its own run id; the schedule's concurrency policy and cluster task limit still
apply. Prints the run id once the run is dispatched.`,
		Example: `  taskyard run nightly-report
  taskyard events tail --schedule nightly-report   # watch it`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := v1.CheckName(args[0]); err != nil {
				return usageError("NAME: %v", err)
			}
			nc, err := g.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			var tr v1.TriggerReply
			if err := ctl(cmd.Context(), g, nc, app.VerbTrigger, &v1.NameRequest{Name: args[0], RequestedBy: whoami()}, &tr); err != nil {
				return err
			}
			if tr.Error != "" {
				return &exitError{code: 1, msg: tr.Error}
			}
			fmt.Fprintln(g.out, tr.RunId)
			return nil
		},
	}
}

// scheduleNextRemote asks the scheduler for an applied schedule's next n
// fires after from.
func scheduleNextRemote(cmd *cobra.Command, g *globals, name string, n int, from time.Time) error {
	if err := v1.CheckName(name); err != nil {
		return usageError("%q is neither a file nor a schedule name: %v", name, err)
	}
	nc, err := g.connect(cmd.Context())
	if err != nil {
		return err
	}
	defer nc.Close()
	req := &v1.NameRequest{Name: name, Count: int32(n), RequestedBy: whoami()}
	if !from.IsZero() {
		req.From = timestamppb.New(from)
	}
	var nr v1.NextReply
	if err := ctl(cmd.Context(), g, nc, app.VerbNext, req, &nr); err != nil {
		return err
	}
	if nr.Error != "" {
		return &exitError{code: 1, msg: nr.Error}
	}
	var gr v1.ListReply
	loc := time.UTC
	if err := ctl(cmd.Context(), g, nc, app.VerbGet, &v1.NameRequest{Name: name}, &gr); err == nil && len(gr.Schedules) == 1 {
		if l, err := time.LoadLocation(gr.Schedules[0].Spec.GetTiming().GetTimezone()); err == nil {
			loc = l
		}
	}
	for _, t := range nr.Times {
		fmt.Fprintln(g.out, t.AsTime().In(loc).Format(time.RFC3339))
	}
	return nil
}

func newRenderCmd(g *globals) *cobra.Command {
	var profileArg, clustersDir, at string
	cmd := &cobra.Command{
		Use:   "render FILE --profile PROFILE",
		Short: "Print the ECS RegisterTaskDefinition and RunTask requests of a schedule",
		Long: `Print, as JSON, the exact RegisterTaskDefinition and RunTask request bodies
the ECS runner would send for a fire of the schedule in FILE on a cluster
profile: the task definition built from the containers and the profile
(network mode, roles, Fargate size, FireLens sidecar when the profile sets
logRouting), and RunTask with cluster, launch type or capacity providers,
network configuration, count split in calls of at most 10, clientToken (the
run id), startedBy, group, tags and the TASKYARD_* overrides. Nothing is sent.

PROFILE is a cluster profile file, or a profile name looked up in --clusters.
The fire time is the schedule's next fire, or --at.`,
		Example: `  taskyard schedule render examples/schedules/hello.yml --profile examples/clusters/dev.yml
  taskyard schedule render jobs/nightly.yml --profile prod --clusters clusters/ --at 2026-12-01T03:00:00+09:00`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if profileArg == "" {
				return usageError("--profile is required")
			}
			s, err := schedule.LoadSchedule(args[0])
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			p, err := findProfile(profileArg, clustersDir)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			if s.Cluster != p.Name {
				fmt.Fprintf(g.errOut, "note: %s names cluster profile %q; rendering on %q\n", args[0], s.Cluster, p.Name)
				s.Cluster = p.Name
			}
			if err := s.ValidateWith(p); err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			when := time.Now()
			switch {
			case at != "":
				when, err = time.Parse(time.RFC3339, at)
				if err != nil {
					return usageError("--at: %v", err)
				}
			case s.Timing.Expression != nil:
				if n := s.Timing.Expression.Next(when); !n.IsZero() {
					when = n
				}
			}
			r, err := app.RenderECS(cmd.Context(), s.ToProto(), p, when)
			if err != nil {
				return &exitError{code: 1, msg: err.Error()}
			}
			enc := json.NewEncoder(g.out)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		},
	}
	cmd.Flags().StringVar(&profileArg, "profile", "", "cluster profile file, or a profile name in --clusters")
	cmd.Flags().StringVar(&clustersDir, "clusters", "clusters", "directory of cluster profiles for --profile NAME")
	cmd.Flags().StringVar(&at, "at", "", "fire time (RFC 3339) for the run id and TASKYARD_SCHEDULED_AT (default: the next fire)")
	return cmd
}

func findProfile(arg, dir string) (*schedule.Profile, error) {
	if fi, err := os.Stat(arg); err == nil && !fi.IsDir() {
		return schedule.LoadProfile(arg)
	}
	profiles, err := app.LoadProfiles(dir)
	if err != nil {
		return nil, err
	}
	if p, ok := profiles[arg]; ok {
		return p, nil
	}
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, fmt.Errorf("--profile %q: no such file, and no profile of that name in %s (known: %s)", arg, filepath.Clean(dir), strings.Join(names, ", "))
}
