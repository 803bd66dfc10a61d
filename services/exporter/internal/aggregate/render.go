package aggregate

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RenderOptions tune RenderJSON.
type RenderOptions struct {
	// StaleAfter: a daemon instance whose last report is older is down.
	StaleAfter time.Duration
	// FluentDaemon is the daemon whose input/filter/output counters make the
	// Fluent Bit sections ("logrouter").
	FluentDaemon string
}

// Severities are always present under alerts, so their keys are stable.
var Severities = []string{"critical", "warning", "info"}

// RenderJSON appends the /api/v1/metrics document for time now to b. Keys
// are sorted, names are made safe for Mackerel ([-a-zA-Z0-9_], plus '.' in
// Fluent Bit plugin names such as "forward.0"), and every value is a number.
func (s *Store) RenderJSON(b []byte, now time.Time, o RenderOptions) []byte {
	if o.FluentDaemon == "" {
		o.FluentDaemon = "logrouter"
	}
	s.mu.RLock()
	defer s.mu.RUnlock()

	w := jw{b: b}
	w.open()

	// Fluent Bit sections, summed over the logrouter instances, and per
	// instance.
	total := map[string]Counters{}
	perInstance := map[string]map[string]Counters{}
	for _, d := range s.daemons {
		if d.Daemon != o.FluentDaemon {
			continue
		}
		id := SafeName(d.Instance)
		if perInstance[id] == nil {
			perInstance[id] = map[string]Counters{}
		}
		for _, sec := range Sections {
			t := d.Total(sec)
			if total[sec] == nil {
				total[sec] = Counters{}
			}
			total[sec].add(t)
			if perInstance[id][sec] == nil {
				perInstance[id][sec] = Counters{}
			}
			perInstance[id][sec].add(t)
		}
	}
	for _, sec := range Sections {
		w.key(sec)
		w.counters(total[sec])
	}
	w.key("instance")
	w.open()
	for _, id := range sortedKeys(perInstance) {
		w.key(id)
		w.open()
		for _, sec := range Sections {
			w.key(sec)
			w.counters(perInstance[id][sec])
		}
		w.close()
	}
	w.close()

	// Log volume per service (over clusters).
	type vol struct{ records, errors, bytes int64 }
	logs := map[string]*vol{}
	for _, l := range s.logs {
		k := SafeName(l.Service)
		v := logs[k]
		if v == nil {
			v = &vol{}
			logs[k] = v
		}
		v.records += l.Records
		v.errors += l.ErrorRecords()
		v.bytes += l.Bytes
	}

	// Schedules: every one with events or known to the scheduler.
	names := make([]string, 0, len(s.schedules)+len(s.info))
	for n := range s.schedules {
		names = append(names, n)
	}
	for n, i := range s.info {
		if _, ok := s.schedules[n]; !ok && i.Known {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	w.key("schedule")
	w.open()
	var empty Schedule
	for _, n := range names {
		if n == "" || !validName(n) {
			continue
		}
		sc := s.schedules[n]
		if sc == nil {
			sc = &empty
		}
		w.key(n)
		w.open()
		w.int("dispatched", sc.Dispatched)
		w.int("succeeded", sc.Succeeded)
		w.int("failed", sc.Failed)
		w.int("failed_to_start", sc.FailedToStart)
		w.int("timed_out", sc.TimedOut)
		w.int("stopped", sc.Stopped)
		w.int("lost", sc.Lost)
		w.int("missed", sc.Missed)
		w.int("skipped", sc.Skipped)
		w.int("dispatch_failed", sc.DispatchFailed)
		w.int("running", int64(len(sc.Active)))
		var oldest time.Time
		for _, t := range sc.Active {
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		}
		w.float("running_seconds", since(now, oldest))
		w.int("last_outcome", int64(sc.LastOutcome))
		if sc.HasExitCode {
			w.int("last_exit_code", int64(sc.LastExitCode))
		}
		if sc.HasDuration {
			w.float("last_duration_seconds", sc.LastDurationSec)
		}
		if sc.HasLag {
			w.float("last_dispatch_lag_seconds", sc.LastLagSeconds)
		}
		if !sc.LastSuccessAt.IsZero() {
			w.float("seconds_since_last_success", since(now, sc.LastSuccessAt))
		}
		if !sc.LastRunAt.IsZero() {
			w.float("seconds_since_last_run", since(now, sc.LastRunAt))
		}
		if i := s.info[n]; i != nil {
			if i.Budget > 0 {
				w.float("duration_budget_seconds", i.Budget.Seconds())
			}
			if !i.NextFire.IsZero() {
				w.float("overdue_seconds", since(now, i.NextFire))
			}
		}
		v := logs[n]
		if v == nil {
			v = &vol{}
		}
		w.int("log_records", v.records)
		w.int("log_error_records", v.errors)
		w.int("log_bytes", v.bytes)
		w.close()
	}
	w.close()

	w.key("logs")
	w.open()
	for _, k := range sortedKeys(logs) {
		w.key(k)
		w.open()
		w.int("records", logs[k].records)
		w.int("error_records", logs[k].errors)
		w.int("bytes", logs[k].bytes)
		w.close()
	}
	w.close()

	// Clusters: tasks seen, and the profile's limit.
	type cl struct{ running, limit int64 }
	clusters := map[string]*cl{}
	get := func(n string) *cl {
		k := SafeName(n)
		c := clusters[k]
		if c == nil {
			c = &cl{}
			clusters[k] = c
		}
		return c
	}
	for _, c := range s.clusters {
		get(c.Name).running += c.running()
	}
	for n, l := range s.limits {
		get(n).limit = l
	}
	w.key("cluster")
	w.open()
	for _, k := range sortedKeys(clusters) {
		w.key(k)
		w.open()
		w.int("running_tasks", clusters[k].running)
		if clusters[k].limit > 0 {
			w.int("task_limit", clusters[k].limit)
		}
		w.close()
	}
	w.close()

	w.key("alerts")
	w.open()
	for _, sev := range Severities {
		w.int(sev, s.alerts.BySeverity[sev])
	}
	for _, sev := range sortedKeys(s.alerts.BySeverity) {
		if !slices.Contains(Severities, sev) {
			w.int(SafeName(sev), s.alerts.BySeverity[sev])
		}
	}
	w.close()

	up := map[string]map[string]int64{}
	for _, d := range s.daemons {
		dn := SafeName(d.Daemon)
		if up[dn] == nil {
			up[dn] = map[string]int64{}
		}
		v := int64(0)
		if o.StaleAfter <= 0 || now.Sub(d.Time) <= o.StaleAfter {
			v = 1
		}
		id := SafeName(d.Instance)
		up[dn][id] = max(up[dn][id], v)
	}
	w.key("daemons")
	w.open()
	for _, dn := range sortedKeys(up) {
		w.key(dn)
		w.open()
		for _, id := range sortedKeys(up[dn]) {
			w.key(id)
			w.open()
			w.int("up", up[dn][id])
			w.close()
		}
		w.close()
	}
	w.close()

	w.close()
	return w.b
}

func since(now, t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return max(now.Sub(t).Seconds(), 0)
}

func validName(s string) bool { return SafeName(s) == s }

// SafeName maps s to one Mackerel metric name segment: every byte outside
// [-a-zA-Z0-9_] becomes '_'; "" becomes "_".
func SafeName(s string) string { return safe(s, false) }

// SafePluginName is SafeName keeping '.', for Fluent Bit plugin instance
// names ("forward.0").
func SafePluginName(s string) string { return safe(s, true) }

func safe(s string, dot bool) string {
	if s == "" {
		return "_"
	}
	ok := true
	for i := 0; i < len(s); i++ {
		if !safeByte(s[i], dot) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i := range b {
		if !safeByte(b[i], dot) {
			b[i] = '_'
		}
	}
	return string(b)
}

func safeByte(c byte, dot bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || dot && c == '.'
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// jw writes JSON objects whose keys are already safe (no escaping needed).
type jw struct {
	b     []byte
	first bool
}

func (w *jw) open()  { w.b = append(w.b, '{'); w.first = true }
func (w *jw) close() { w.b = append(w.b, '}'); w.first = false }

func (w *jw) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *jw) int(k string, v int64) {
	w.key(k)
	w.b = strconv.AppendInt(w.b, v, 10)
}

func (w *jw) float(k string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	w.key(k)
	w.b = strconv.AppendFloat(w.b, v, 'f', -1, 64)
}

// counters writes a Fluent Bit section, merging plugins whose safe names
// collide.
func (w *jw) counters(c Counters) {
	merged := Counters{}
	for p, m := range c {
		sp := SafePluginName(p)
		if merged[sp] == nil {
			merged[sp] = map[string]int64{}
		}
		for k, v := range m {
			merged[sp][SafeName(k)] += v
		}
	}
	w.open()
	for _, p := range sortedKeys(merged) {
		w.key(p)
		w.open()
		for _, k := range sortedKeys(merged[p]) {
			w.int(k, merged[p][k])
		}
		w.close()
	}
	w.close()
}

// scheduleCounters are the schedule.<name>.* leaves that only grow.
var scheduleCounters = map[string]bool{
	"dispatched": true, "succeeded": true, "failed": true, "failed_to_start": true, "timed_out": true,
	"stopped": true, "lost": true, "missed": true, "skipped": true, "dispatch_failed": true,
	"log_records": true, "log_error_records": true, "log_bytes": true,
}

// IsCounter reports whether a key of the flattened /api/v1/metrics document
// (without prefix, e.g. "schedule.nightly.failed") is a counter — a value
// that never decreases, to be read as a rate — rather than a gauge. Every
// Fluent Bit section value, every logs.* and alerts.* value and the
// schedule counters are counters.
func IsCounter(key string) bool {
	t := strings.Split(key, ".")
	switch t[0] {
	case "input", "filter", "output", "alerts":
		return len(t) >= 2
	case "instance":
		return len(t) >= 3 && slices.Contains(Sections, t[2])
	case "logs":
		return len(t) == 3
	case "schedule":
		return len(t) == 3 && scheduleCounters[t[2]]
	}
	return false
}
