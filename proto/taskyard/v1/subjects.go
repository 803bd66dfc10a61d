package taskyardv1

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token of every taskyard subject.
const DefaultPrefix = "taskyard"

// NoSchedule is the schedule token of a task subject for tasks that taskyard
// did not start.
const NoSchedule = "_"

// Subjects builds and parses taskyard subjects under one prefix. The zero
// value uses DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) p() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// RunDispatched is <prefix>.run.dispatched.<schedule>.
func (s Subjects) RunDispatched(schedule string) string {
	return s.p() + ".run.dispatched." + schedule
}

// RunSkipped is <prefix>.run.skipped.<schedule>.
func (s Subjects) RunSkipped(schedule string) string { return s.p() + ".run.skipped." + schedule }

// RunDispatchFailed is <prefix>.run.dispatch_failed.<schedule>.
func (s Subjects) RunDispatchFailed(schedule string) string {
	return s.p() + ".run.dispatch_failed." + schedule
}

// RunFinished is <prefix>.run.finished.<schedule>.
func (s Subjects) RunFinished(schedule string) string { return s.p() + ".run.finished." + schedule }

// RunMissed is <prefix>.run.missed.<schedule>.
func (s Subjects) RunMissed(schedule string) string { return s.p() + ".run.missed." + schedule }

// Task is <prefix>.task.<cluster>.<schedule>; schedule "" becomes NoSchedule.
func (s Subjects) Task(cluster, schedule string) string {
	if schedule == "" {
		schedule = NoSchedule
	}
	return s.p() + ".task." + token(cluster) + "." + schedule
}

// Alert is <prefix>.alert.<severity>.<kind>, severity in lower case
// (critical, warning, info).
func (s Subjects) Alert(sev Severity, kind string) string {
	return s.p() + ".alert." + SeverityName(sev) + "." + kind
}

// LogStats is <prefix>.logs.stats.<cluster>.<service>.
func (s Subjects) LogStats(cluster, service string) string {
	return s.p() + ".logs.stats." + token(cluster) + "." + token(service)
}

// DaemonStats is <prefix>.stats.<daemon>.<instance>.
func (s Subjects) DaemonStats(daemon, instance string) string {
	return s.p() + ".stats." + daemon + "." + token(instance)
}

// Ctl is <prefix>.ctl.<daemon>.<verb>, the request/reply control subjects.
func (s Subjects) Ctl(daemon, verb string) string { return s.p() + ".ctl." + daemon + "." + verb }

// All is <prefix>.>, every taskyard subject.
func (s Subjects) All() string { return s.p() + ".>" }

// Runs, Tasks, Alerts, LogStatsAll and DaemonStatsAll are wildcards for
// subscribing to a whole family.
func (s Subjects) Runs() string { return s.p() + ".run.>" }

// Tasks is <prefix>.task.>.
func (s Subjects) Tasks() string { return s.p() + ".task.>" }

// Alerts is <prefix>.alert.>.
func (s Subjects) Alerts() string { return s.p() + ".alert.>" }

// LogStatsAll is <prefix>.logs.stats.>.
func (s Subjects) LogStatsAll() string { return s.p() + ".logs.stats.>" }

// DaemonStatsAll is <prefix>.stats.>.
func (s Subjects) DaemonStatsAll() string { return s.p() + ".stats.>" }

// Parsed is a subject taken apart by Parse.
type Parsed struct {
	// Family: run, task, alert, logs.stats, stats, ctl.
	Family string
	// Kind: the event kind within the family (dispatched, skipped,
	// dispatch_failed, finished, missed for runs; the alert kind; the ctl
	// verb).
	Kind     string
	Schedule string
	Cluster  string
	Service  string
	Severity string
	Daemon   string
	Instance string
}

// Parse takes a taskyard subject apart. It returns an error for subjects
// outside the prefix or of an unknown shape.
func (s Subjects) Parse(subject string) (Parsed, error) {
	rest, ok := strings.CutPrefix(subject, s.p()+".")
	if !ok {
		return Parsed{}, fmt.Errorf("subject %q is not under prefix %q", subject, s.p())
	}
	t := strings.Split(rest, ".")
	bad := func() (Parsed, error) { return Parsed{}, fmt.Errorf("subject %q has an unknown shape", subject) }
	switch t[0] {
	case "run":
		if len(t) != 3 {
			return bad()
		}
		switch t[1] {
		case "dispatched", "skipped", "dispatch_failed", "finished", "missed":
			return Parsed{Family: "run", Kind: t[1], Schedule: t[2]}, nil
		}
	case "task":
		if len(t) == 3 {
			p := Parsed{Family: "task", Cluster: t[1], Schedule: t[2]}
			if p.Schedule == NoSchedule {
				p.Schedule = ""
			}
			return p, nil
		}
	case "alert":
		if len(t) == 3 {
			return Parsed{Family: "alert", Severity: t[1], Kind: t[2]}, nil
		}
	case "logs":
		if len(t) == 4 && t[1] == "stats" {
			return Parsed{Family: "logs.stats", Cluster: t[2], Service: t[3]}, nil
		}
	case "stats":
		if len(t) == 3 {
			return Parsed{Family: "stats", Daemon: t[1], Instance: t[2]}, nil
		}
	case "ctl":
		if len(t) == 3 {
			return Parsed{Family: "ctl", Daemon: t[1], Kind: t[2]}, nil
		}
	}
	return bad()
}

// SeverityName is the lower-case name used in subjects and config:
// critical, warning, info ("unspecified" for the zero value).
func SeverityName(s Severity) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SEVERITY_"))
}

// ParseSeverity is the inverse of SeverityName.
func ParseSeverity(name string) (Severity, error) {
	v, ok := Severity_value["SEVERITY_"+strings.ToUpper(name)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown severity %q (want critical, warning or info)", name)
	}
	return Severity(v), nil
}

// token makes an arbitrary string (an ECS cluster ARN, a host name) safe as
// one subject token: '.', '*', '>' and white space become '_'.
func token(s string) string {
	if s == "" {
		return NoSchedule
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}

// Token exposes the subject-token sanitizer for callers building their own
// filters.
func Token(s string) string { return token(s) }
