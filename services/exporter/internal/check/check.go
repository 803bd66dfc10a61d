// Package check is check-taskyard: it judges schedules from the exporter's
// document the way a mackerel-agent check reports them.
//
//   - CRITICAL: the latest verdict is failed, failed to start (including a
//     dispatch failure), lost, or a missed fire;
//   - WARNING: the latest verdict is timed out or stopped; the last run took
//     longer than its duration budget, or the run in progress has been
//     running longer than it; the next fire is overdue by more than the late
//     threshold, or the last run was dispatched later than that;
//   - OK otherwise (including a schedule that has not run yet).
//
// The duration budget is -max-duration when given, else the schedule's
// timeout. The latest verdict is that of the most recent fire (by scheduled
// time), so a failure stays CRITICAL until a later run succeeds.
package check

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/mackerelio/checkers"

	"github.com/taskyard/taskyard/services/exporter/internal/metricsjson"
)

// Options select and tune the check.
type Options struct {
	// Schedule is the one schedule to check; "" checks every schedule.
	Schedule string
	// Late is how overdue a fire, or how late a dispatch, may be.
	Late time.Duration
	// MaxDuration overrides every schedule's duration budget when > 0.
	MaxDuration time.Duration
}

type finding struct {
	status   checkers.Status
	schedule string
	text     string
}

// Evaluate judges the document.
func Evaluate(d *metricsjson.Doc, o Options) *checkers.Checker {
	names := make([]string, 0, len(d.Schedule))
	if o.Schedule != "" {
		if _, ok := d.Schedule[o.Schedule]; !ok {
			return checkers.Unknown(fmt.Sprintf("schedule %s is not known to the exporter (no event and not applied)", o.Schedule))
		}
		names = append(names, o.Schedule)
	} else {
		for n := range d.Schedule {
			names = append(names, n)
		}
		slices.Sort(names)
	}
	var problems, oks []finding
	for _, n := range names {
		f := judge(n, d.Schedule[n], o)
		if f.status == checkers.OK {
			oks = append(oks, f)
		} else {
			problems = append(problems, f)
		}
	}
	if len(problems) == 0 {
		if len(oks) == 1 {
			return checkers.Ok(oks[0].schedule + ": " + oks[0].text)
		}
		return checkers.Ok(fmt.Sprintf("%d schedules OK", len(oks)))
	}
	slices.SortStableFunc(problems, func(a, b finding) int { return int(b.status) - int(a.status) })
	parts := make([]string, 0, len(problems))
	for _, f := range problems {
		parts = append(parts, fmt.Sprintf("%s %s: %s", f.status, f.schedule, f.text))
	}
	msg := strings.Join(parts, "; ")
	if len(oks) > 0 {
		msg += fmt.Sprintf(" (%d other schedules OK)", len(oks))
	}
	return checkers.NewChecker(problems[0].status, msg)
}

// Outcome codes of last_outcome (the proto Outcome enum, and 7 = missed).
const (
	outcomeSucceeded     = 1
	outcomeFailed        = 2
	outcomeFailedToStart = 3
	outcomeTimedOut      = 4
	outcomeStopped       = 5
	outcomeLost          = 6
	outcomeMissed        = 7
)

func judge(name string, s map[string]float64, o Options) finding {
	f := func(st checkers.Status, format string, args ...any) finding {
		return finding{status: st, schedule: name, text: fmt.Sprintf(format, args...)}
	}
	switch int(s["last_outcome"]) {
	case outcomeFailed:
		if code, ok := s["last_exit_code"]; ok {
			return f(checkers.CRITICAL, "last run failed (exit code %d)", int(code))
		}
		return f(checkers.CRITICAL, "last run failed")
	case outcomeFailedToStart:
		return f(checkers.CRITICAL, "last run failed to start")
	case outcomeLost:
		return f(checkers.CRITICAL, "last run was lost (no task event arrived)")
	case outcomeMissed:
		return f(checkers.CRITICAL, "last fire was missed")
	}
	var warnings []string
	switch int(s["last_outcome"]) {
	case outcomeTimedOut:
		warnings = append(warnings, "last run timed out")
	case outcomeStopped:
		warnings = append(warnings, "last run was stopped")
	}
	budget := o.MaxDuration.Seconds()
	if budget <= 0 {
		budget = s["duration_budget_seconds"]
	}
	if budget > 0 {
		if d, ok := s["last_duration_seconds"]; ok && d > budget {
			warnings = append(warnings, fmt.Sprintf("last run took %s, over its %s budget", secs(d), secs(budget)))
		}
		if s["running"] > 0 && s["running_seconds"] > budget {
			warnings = append(warnings, fmt.Sprintf("running for %s, over its %s budget", secs(s["running_seconds"]), secs(budget)))
		}
	}
	late := o.Late.Seconds()
	if late > 0 {
		if v := s["overdue_seconds"]; v > late {
			warnings = append(warnings, fmt.Sprintf("next fire is %s overdue", secs(v)))
		}
		if v := s["last_dispatch_lag_seconds"]; v > late {
			warnings = append(warnings, fmt.Sprintf("last run was dispatched %s late", secs(v)))
		}
	}
	if len(warnings) > 0 {
		return f(checkers.WARNING, "%s", strings.Join(warnings, ", "))
	}
	switch {
	case int(s["last_outcome"]) == outcomeSucceeded:
		if ago, ok := s["seconds_since_last_success"]; ok {
			return f(checkers.OK, "last run succeeded %s ago", secs(ago))
		}
		return f(checkers.OK, "last run succeeded")
	case s["running"] > 0:
		return f(checkers.OK, "running")
	default:
		return f(checkers.OK, "no verdict yet")
	}
}

// secs renders seconds as a rounded duration ("1m30s").
func secs(v float64) string {
	return (time.Duration(math.Round(v)) * time.Second).String()
}
