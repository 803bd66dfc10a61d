// Command check-taskyard is a mackerel-agent check plugin for taskyard
// schedules: it reads the exporter's /api/v1/metrics and exits 0 (OK),
// 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN) with a one-line reason. See
// internal/check for the rules.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mackerelio/checkers"

	"github.com/taskyard/taskyard/services/exporter/internal/check"
	"github.com/taskyard/taskyard/services/exporter/internal/metricsjson"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

func main() {
	if slices.ContainsFunc(os.Args[1:], func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		// Usage was asked for, not a check: print it and exit 0 instead of
		// reporting UNKNOWN.
		_ = run([]string{"-help"}, os.Stdout)
		os.Exit(0)
	}
	ckr := run(os.Args[1:], os.Stderr)
	ckr.Name = "taskyard"
	ckr.Exit()
}

func run(args []string, stderr io.Writer) *checkers.Checker {
	fs := flag.NewFlagSet("check-taskyard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", metricsjson.DefaultURL, "URL of the exporter's /api/v1/metrics")
	var o check.Options
	fs.StringVar(&o.Schedule, "schedule", "", "schedule to check (default: every schedule, the worst status wins)")
	fs.DurationVar(&o.Late, "late", time.Minute, "WARNING when the next fire is overdue, or the last run was dispatched late, by more than this")
	fs.DurationVar(&o.MaxDuration, "max-duration", 0, "duration budget of a run (default: the schedule's timeout); WARNING when a run takes longer")
	timeout := fs.Duration("timeout", 5*time.Second, "HTTP timeout")
	var hs headers
	fs.Var(&hs, "header", `HTTP request header "Name: value" (repeatable)`)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: check-taskyard [-url URL] [-schedule NAME] [-late 1m] [-max-duration D]

Exit status: 0 OK, 1 WARNING (late, over its duration budget, timed out,
stopped), 2 CRITICAL (last run failed, failed to start, was lost, or the fire
was missed), 3 UNKNOWN (the exporter cannot be read, or no such schedule).`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return checkers.Unknown(err.Error())
	}
	if fs.NArg() > 0 {
		return checkers.Unknown(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	h, err := metricsjson.Headers(hs)
	if err != nil {
		return checkers.Unknown(err.Error())
	}
	d, err := metricsjson.Fetch(context.Background(), *url, h, *timeout)
	if err != nil {
		return checkers.Unknown(err.Error())
	}
	return check.Evaluate(d, o)
}
