package aggregate

import (
	"time"
)

// Entity kinds: the second token of an entity's key.
const (
	KindSchedule = "schedule"
	KindCluster  = "cluster"
	KindLogs     = "logs"
	KindAlerts   = "alerts"
	KindDaemon   = "daemon"
)

// OutcomeMissed is the last_outcome code of a fire that was missed (the
// proto Outcome enum stops at 6, LOST).
const OutcomeMissed = 7

// Seqs is, per stream name, the sequence of the last message an entity
// applied.
type Seqs map[string]uint64

// fresh reports whether the message (stream, seq) is new for the entity and
// records it. seq 0 means "not from a stream" (tests, tools): always new.
func (s *Seqs) fresh(stream string, seq uint64) bool {
	if seq == 0 {
		return true
	}
	if *s == nil {
		*s = Seqs{}
	}
	if seq <= (*s)[stream] {
		return false
	}
	(*s)[stream] = seq
	return true
}

// Schedule is everything counted for one schedule.
type Schedule struct {
	Name string `json:"name"`
	Seq  Seqs   `json:"seq"`

	Dispatched     int64 `json:"dispatched"`
	Succeeded      int64 `json:"succeeded"`
	Failed         int64 `json:"failed"`
	FailedToStart  int64 `json:"failed_to_start"`
	TimedOut       int64 `json:"timed_out"`
	Stopped        int64 `json:"stopped"`
	Lost           int64 `json:"lost"`
	Missed         int64 `json:"missed"`
	Skipped        int64 `json:"skipped"`
	DispatchFailed int64 `json:"dispatch_failed"`

	// Active are the runs dispatched and not finished: run id → dispatched at.
	Active map[string]time.Time `json:"active,omitempty"`
	// Done remembers the last finished run ids, so a dispatch event seen
	// after its run's verdict does not make the run look active forever.
	Done []string `json:"done,omitempty"`

	// LastOutcome is the proto Outcome of the latest fire's verdict, or
	// OutcomeMissed; LastOutcomeFor is that fire's scheduled time.
	LastOutcome    int       `json:"last_outcome"`
	LastOutcomeFor time.Time `json:"last_outcome_for"`
	LastReason     string    `json:"last_reason,omitempty"`

	// Last finished run (by finished_at).
	LastFinishedAt  time.Time `json:"last_finished_at"`
	HasExitCode     bool      `json:"has_exit_code"`
	LastExitCode    int32     `json:"last_exit_code"`
	HasDuration     bool      `json:"has_duration"`
	LastDurationSec float64   `json:"last_duration_seconds"`

	LastSuccessAt  time.Time `json:"last_success_at"`
	LastRunAt      time.Time `json:"last_run_at"`
	HasLag         bool      `json:"has_lag"`
	LastLagSeconds float64   `json:"last_dispatch_lag_seconds"`
}

const doneMemory = 8

func (s *Schedule) finish(runID string) {
	delete(s.Active, runID)
	for _, d := range s.Done {
		if d == runID {
			return
		}
	}
	s.Done = append(s.Done, runID)
	if len(s.Done) > doneMemory {
		s.Done = s.Done[len(s.Done)-doneMemory:]
	}
}

func (s *Schedule) isDone(runID string) bool {
	for _, d := range s.Done {
		if d == runID {
			return true
		}
	}
	return false
}

// setOutcome records the verdict of the fire scheduled at for, unless a
// later fire already has one.
func (s *Schedule) setOutcome(outcome int, forTime time.Time, reason string) {
	if forTime.Before(s.LastOutcomeFor) {
		return
	}
	s.LastOutcome, s.LastOutcomeFor, s.LastReason = outcome, forTime, reason
}

// Task is one task known to a cluster.
type Task struct {
	Version  int64     `json:"v"`
	Stopped  bool      `json:"stopped,omitempty"`
	Schedule string    `json:"schedule,omitempty"`
	At       time.Time `json:"at"`
}

// Cluster is what is known about one cluster's tasks.
type Cluster struct {
	Name string `json:"name"`
	Seq  Seqs   `json:"seq"`
	// Tasks by task id; stopped ones are kept for TaskMemory after they
	// stopped, so an older event delivered late does not revive them.
	Tasks   map[string]*Task `json:"tasks,omitempty"`
	applies int
}

// TaskMemory is how long a stopped task is remembered.
const TaskMemory = 10 * time.Minute

func (c *Cluster) running() int64 {
	var n int64
	for _, t := range c.Tasks {
		if !t.Stopped {
			n++
		}
	}
	return n
}

// task applies an observation of task id at version v (0: from a run event,
// weaker than any task event).
func (c *Cluster) task(id, schedule string, v int64, stopped bool, at time.Time) {
	if c.Tasks == nil {
		c.Tasks = map[string]*Task{}
	}
	t, ok := c.Tasks[id]
	switch {
	case !ok:
		c.Tasks[id] = &Task{Version: v, Stopped: stopped, Schedule: schedule, At: at}
	case t.Stopped && !stopped:
		// A stopped task never runs again; older or equal news is stale.
	case stopped || v > t.Version:
		t.Version, t.Stopped = max(v, t.Version), stopped || t.Stopped
		if at.After(t.At) {
			t.At = at
		}
		if schedule != "" {
			t.Schedule = schedule
		}
	}
	c.applies++
	if c.applies%256 == 0 {
		c.prune(at)
	}
}

func (c *Cluster) prune(now time.Time) {
	for id, t := range c.Tasks {
		if t.Stopped && now.Sub(t.At) > TaskMemory {
			delete(c.Tasks, id)
		}
	}
}

// Logs is the log volume of one (cluster, service).
type Logs struct {
	Cluster string           `json:"cluster"`
	Service string           `json:"service"`
	Seq     Seqs             `json:"seq"`
	Records int64            `json:"records"`
	Bytes   int64            `json:"bytes"`
	Levels  map[string]int64 `json:"levels,omitempty"`
}

// ErrorRecords counts records at level error or fatal.
func (l *Logs) ErrorRecords() int64 { return l.Levels["error"] + l.Levels["fatal"] }

// Alerts counts alerts by severity and kind.
type Alerts struct {
	Seq Seqs `json:"seq"`
	// BySeverity counts raised (not resolved) alerts.
	BySeverity map[string]int64 `json:"by_severity,omitempty"`
	// ByKind counts raised alerts by "<severity>/<kind>".
	ByKind   map[string]int64 `json:"by_kind,omitempty"`
	Resolved int64            `json:"resolved"`
}

// Counters is a Fluent Bit section: plugin name → counter name → value.
type Counters map[string]map[string]int64

func (c Counters) add(o Counters) {
	for p, m := range o {
		if c[p] == nil {
			c[p] = map[string]int64{}
		}
		for k, v := range m {
			c[p][k] += v
		}
	}
}

// Daemon is the latest report of one daemon instance, with the bases that
// keep its counters monotonic across the instance's restarts.
type Daemon struct {
	Daemon    string              `json:"daemon"`
	Instance  string              `json:"instance"`
	Seq       Seqs                `json:"seq"`
	Time      time.Time           `json:"time"`
	StartedAt time.Time           `json:"started_at"`
	Last      map[string]Counters `json:"last,omitempty"`
	Base      map[string]Counters `json:"base,omitempty"`
	Gauges    map[string]float64  `json:"gauges,omitempty"`
}

// Sections are the Fluent Bit sections, in output order.
var Sections = []string{"input", "filter", "output"}

// Total is base+last of a section: the monotonic counters.
func (d *Daemon) Total(section string) Counters {
	out := Counters{}
	out.add(d.Base[section])
	out.add(d.Last[section])
	return out
}

func (d *Daemon) report(t, started time.Time, sections map[string]Counters, gauges map[string]float64) {
	if d.Base == nil {
		d.Base = map[string]Counters{}
	}
	restarted := !d.StartedAt.IsZero() && !started.IsZero() && !started.Equal(d.StartedAt)
	for _, sec := range Sections {
		prev, cur := d.Last[sec], sections[sec]
		if d.Base[sec] == nil {
			d.Base[sec] = Counters{}
		}
		for p, m := range prev {
			for k, v := range m {
				// Carry the previous value into the base when the instance
				// restarted or the counter went down (a restart we could not
				// see from started_at).
				if restarted || cur[p][k] < v {
					if d.Base[sec][p] == nil {
						d.Base[sec][p] = map[string]int64{}
					}
					d.Base[sec][p][k] += v
				}
			}
		}
	}
	d.Last = sections
	d.Gauges = gauges
	if t.After(d.Time) || d.Time.IsZero() {
		d.Time = t
	}
	if !started.IsZero() {
		d.StartedAt = started
	}
}
