package aggregate

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// Observer is told about every freshly applied run verdict and dispatch, for
// histograms that live only in this process (Prometheus).
type Observer interface {
	RunFinished(schedule string, outcome v1.Outcome, duration time.Duration)
	RunDispatched(schedule string, lag time.Duration)
}

// ScheduleInfo is what the exporter reads about a schedule from the
// scheduler's KV buckets: it is not counted, so not persisted.
type ScheduleInfo struct {
	// Known is true while the schedule exists in KV taskyard-schedules.
	Known bool
	// Budget is the schedule's timeout (0: none).
	Budget time.Duration
	// NextFire is the scheduler's next fire time (zero: unknown).
	NextFire time.Time
}

// Store holds the exporter's state. It is safe for concurrent use.
type Store struct {
	prefix string
	obs    Observer

	mu        sync.RWMutex
	schedules map[string]*Schedule
	clusters  map[string]*Cluster
	logs      map[string]*Logs
	alerts    *Alerts
	daemons   map[string]*Daemon
	info      map[string]*ScheduleInfo
	limits    map[string]int64
	dirty     map[any]struct{}
	applied   int64
}

// New returns an empty store for subjects under prefix. obs may be nil.
func New(prefix string, obs Observer) *Store {
	if prefix == "" {
		prefix = v1.DefaultPrefix
	}
	return &Store{
		prefix:    prefix,
		obs:       obs,
		schedules: map[string]*Schedule{},
		clusters:  map[string]*Cluster{},
		logs:      map[string]*Logs{},
		alerts:    &Alerts{},
		daemons:   map[string]*Daemon{},
		info:      map[string]*ScheduleInfo{},
		limits:    map[string]int64{},
		dirty:     map[any]struct{}{},
	}
}

// Applied is the number of messages Apply has decoded since the store was
// created.
func (s *Store) Applied() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Apply folds one message, taken from stream at sequence seq (0 when not
// from a stream), into the state. Entities that already applied (stream,
// seq) ignore it. A message that cannot be decoded is an error and changes
// nothing.
func (s *Store) Apply(stream string, seq uint64, subject string, h nats.Header, data []byte) error {
	m, err := decode(s.prefix, subject, h, data)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied++
	return s.apply(stream, seq, subject, m)
}

// ApplyMessage is Apply for a message already decoded.
func (s *Store) ApplyMessage(stream string, seq uint64, subject string, m proto.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied++
	return s.apply(stream, seq, subject, m)
}

func (s *Store) apply(stream string, seq uint64, subject string, m proto.Message) error {
	switch e := m.(type) {
	case *v1.RunDispatched:
		if sc := s.schedule(e.GetSchedule()); sc.Seq.fresh(stream, seq) {
			sc.Dispatched++
			at := e.GetDispatchedAt().AsTime()
			if !sc.isDone(e.GetRunId()) {
				if sc.Active == nil {
					sc.Active = map[string]time.Time{}
				}
				sc.Active[e.GetRunId()] = at
			}
			if at.After(sc.LastRunAt) {
				sc.LastRunAt = at
			}
			if e.GetScheduledAt() != nil && e.GetDispatchedAt() != nil {
				lag := at.Sub(e.GetScheduledAt().AsTime())
				sc.HasLag, sc.LastLagSeconds = true, max(lag.Seconds(), 0)
				if s.obs != nil {
					s.obs.RunDispatched(sc.Name, lag)
				}
			}
			s.touch(sc)
		}
		if e.GetCluster() != "" && len(e.GetTaskIds()) > 0 {
			if c := s.cluster(e.GetCluster()); c.Seq.fresh(stream, seq) {
				for _, id := range e.GetTaskIds() {
					c.task(id, e.GetSchedule(), 0, false, e.GetDispatchedAt().AsTime())
				}
				s.touch(c)
			}
		}
	case *v1.RunSkipped:
		if sc := s.schedule(e.GetSchedule()); sc.Seq.fresh(stream, seq) {
			sc.Skipped++
			s.touch(sc)
		}
	case *v1.RunDispatchFailed:
		if sc := s.schedule(e.GetSchedule()); sc.Seq.fresh(stream, seq) {
			sc.DispatchFailed++
			reason := e.GetError()
			if reason == "" && len(e.GetFailures()) > 0 {
				reason = e.GetFailures()[0].GetReason()
			}
			sc.setOutcome(int(v1.Outcome_OUTCOME_FAILED_TO_START), e.GetScheduledAt().AsTime(), "dispatch failed: "+reason)
			s.touch(sc)
		}
	case *v1.RunFinished:
		s.runFinished(stream, seq, e)
	case *v1.RunMissed:
		if sc := s.schedule(e.GetSchedule()); sc.Seq.fresh(stream, seq) {
			sc.Missed++
			sc.setOutcome(OutcomeMissed, e.GetExpectedAt().AsTime(), "missed: "+e.GetWhy())
			s.touch(sc)
		}
	case *v1.TaskStateChanged:
		name := e.GetCluster()
		if name == "" {
			if p, err := (v1.Subjects{Prefix: s.prefix}).Parse(subject); err == nil {
				name = p.Cluster
			}
		}
		if name == "" || e.GetTaskArn() == "" {
			return nil
		}
		if c := s.cluster(name); c.Seq.fresh(stream, seq) {
			at := e.GetEventTime().AsTime()
			if e.GetEventTime() == nil {
				at = e.GetStoppedAt().AsTime()
			}
			c.task(e.GetTaskArn(), e.GetSchedule(), e.GetVersion(), e.GetLastStatus() == "STOPPED", at)
			s.touch(c)
		}
	case *v1.Alert:
		a := s.alerts
		if a.Seq.fresh(stream, seq) {
			if e.GetResolved() {
				a.Resolved++
			} else {
				sev := v1.SeverityName(e.GetSeverity())
				if a.BySeverity == nil {
					a.BySeverity, a.ByKind = map[string]int64{}, map[string]int64{}
				}
				a.BySeverity[sev]++
				a.ByKind[sev+"/"+e.GetKind()]++
			}
			s.touch(a)
		}
	case *v1.LogStats:
		l := s.logVolume(e.GetCluster(), e.GetService())
		if l.Seq.fresh(stream, seq) {
			l.Records += e.GetRecords()
			l.Bytes += e.GetBytes()
			for lvl, n := range e.GetRecordsByLevel() {
				if l.Levels == nil {
					l.Levels = map[string]int64{}
				}
				l.Levels[strings.ToLower(lvl)] += n
			}
			s.touch(l)
		}
	case *v1.DaemonStats:
		d := s.daemon(e.GetDaemon(), e.GetInstance())
		if d.Seq.fresh(stream, seq) {
			sections := map[string]Counters{
				"input":  counters(e.GetInput()),
				"filter": counters(e.GetFilter()),
				"output": counters(e.GetOutput()),
			}
			var started time.Time
			if e.GetStartedAt() != nil {
				started = e.GetStartedAt().AsTime()
			}
			d.report(e.GetTime().AsTime(), started, sections, e.GetGauges())
			s.touch(d)
		}
	}
	return nil
}

// decode is v1.Decode with the common types allocated directly rather than
// through the registry (the ingest hot path).
func decode(prefix, subject string, h nats.Header, data []byte) (proto.Message, error) {
	var m proto.Message
	if h != nil {
		switch h.Get(v1.HeaderType) {
		case "taskyard.v1.RunDispatched":
			m = &v1.RunDispatched{}
		case "taskyard.v1.RunFinished":
			m = &v1.RunFinished{}
		case "taskyard.v1.TaskStateChanged":
			m = &v1.TaskStateChanged{}
		case "taskyard.v1.LogStats":
			m = &v1.LogStats{}
		case "taskyard.v1.DaemonStats":
			m = &v1.DaemonStats{}
		}
	}
	if m == nil {
		return v1.Decode(prefix, subject, h, data)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode %s on %s: %w", m.ProtoReflect().Descriptor().FullName(), subject, err)
	}
	return m, nil
}

func counters(m map[string]*v1.PluginCounters) Counters {
	out := Counters{}
	for p, c := range m {
		out[p] = map[string]int64{}
		for k, v := range c.GetCounters() {
			out[p][k] = v
		}
	}
	return out
}

func (s *Store) runFinished(stream string, seq uint64, e *v1.RunFinished) {
	if sc := s.schedule(e.GetSchedule()); sc.Seq.fresh(stream, seq) {
		switch e.GetOutcome() {
		case v1.Outcome_OUTCOME_SUCCEEDED:
			sc.Succeeded++
		case v1.Outcome_OUTCOME_FAILED:
			sc.Failed++
		case v1.Outcome_OUTCOME_FAILED_TO_START:
			sc.FailedToStart++
		case v1.Outcome_OUTCOME_TIMED_OUT:
			sc.TimedOut++
		case v1.Outcome_OUTCOME_STOPPED:
			sc.Stopped++
		case v1.Outcome_OUTCOME_LOST:
			sc.Lost++
		}
		sc.finish(e.GetRunId())
		finished := e.GetFinishedAt().AsTime()
		dur := e.GetDuration().AsDuration()
		if e.GetDuration() == nil && e.GetStartedAt() != nil && e.GetFinishedAt() != nil {
			dur = finished.Sub(e.GetStartedAt().AsTime())
		}
		if !finished.Before(sc.LastFinishedAt) {
			sc.LastFinishedAt = finished
			if code, ok := exitCode(e.GetContainers()); ok {
				sc.HasExitCode, sc.LastExitCode = true, code
			}
			if e.GetDuration() != nil || e.GetStartedAt() != nil {
				sc.HasDuration, sc.LastDurationSec = true, dur.Seconds()
			}
		}
		if e.GetOutcome() == v1.Outcome_OUTCOME_SUCCEEDED && finished.After(sc.LastSuccessAt) {
			sc.LastSuccessAt = finished
		}
		forTime := e.GetScheduledAt().AsTime()
		if e.GetScheduledAt() == nil {
			forTime = finished
		}
		sc.setOutcome(int(e.GetOutcome()), forTime, e.GetReason())
		if s.obs != nil {
			s.obs.RunFinished(sc.Name, e.GetOutcome(), dur)
		}
		s.touch(sc)
	}
	if e.GetCluster() != "" && len(e.GetTaskIds()) > 0 {
		if c := s.cluster(e.GetCluster()); c.Seq.fresh(stream, seq) {
			for _, id := range e.GetTaskIds() {
				c.task(id, e.GetSchedule(), 0, true, e.GetFinishedAt().AsTime())
			}
			s.touch(c)
		}
	}
}

// exitCode picks the exit code that explains a run: the first essential
// container that exited non-zero, else the first essential container's,
// else the first container's that has one.
func exitCode(cs []*v1.ContainerExit) (int32, bool) {
	for _, c := range cs {
		if c.GetEssential() && c.GetHasExitCode() && c.GetExitCode() != 0 {
			return c.GetExitCode(), true
		}
	}
	for _, c := range cs {
		if c.GetEssential() && c.GetHasExitCode() {
			return c.GetExitCode(), true
		}
	}
	for _, c := range cs {
		if c.GetHasExitCode() {
			return c.GetExitCode(), true
		}
	}
	return 0, false
}

func (s *Store) schedule(name string) *Schedule {
	sc, ok := s.schedules[name]
	if !ok {
		sc = &Schedule{Name: name}
		s.schedules[name] = sc
	}
	return sc
}

func (s *Store) cluster(name string) *Cluster {
	c, ok := s.clusters[name]
	if !ok {
		c = &Cluster{Name: name}
		s.clusters[name] = c
	}
	return c
}

func (s *Store) logVolume(cluster, service string) *Logs {
	k := cluster + "/" + service
	l, ok := s.logs[k]
	if !ok {
		l = &Logs{Cluster: cluster, Service: service}
		s.logs[k] = l
	}
	return l
}

func (s *Store) daemon(daemon, instance string) *Daemon {
	k := daemon + "/" + instance
	d, ok := s.daemons[k]
	if !ok {
		d = &Daemon{Daemon: daemon, Instance: instance}
		s.daemons[k] = d
	}
	return d
}

// touch marks an entity (a *Schedule, *Cluster, *Logs, *Alerts or *Daemon)
// changed; its key is computed only when it is taken.
func (s *Store) touch(e any) { s.dirty[e] = struct{}{} }

func entityKey(e any) string {
	switch e := e.(type) {
	case *Schedule:
		return EntityKey(KindSchedule, e.Name)
	case *Cluster:
		return EntityKey(KindCluster, e.Name)
	case *Logs:
		return EntityKey(KindLogs, e.Cluster+"/"+e.Service)
	case *Alerts:
		return EntityKey(KindAlerts, "all")
	case *Daemon:
		return EntityKey(KindDaemon, e.Daemon+"/"+e.Instance)
	}
	panic(fmt.Sprintf("aggregate: %T is not an entity", e))
}

// SetScheduleInfo records what the scheduler's buckets say about a schedule.
func (s *Store) SetScheduleInfo(name string, f func(*ScheduleInfo)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.info[name]
	if !ok {
		i = &ScheduleInfo{}
		s.info[name] = i
	}
	f(i)
}

// SetTaskLimits sets the task limit of each cluster profile.
func (s *Store) SetTaskLimits(limits map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = limits
}

// EntityKey is the key of an entity below the exporter's snapshot prefix:
// <kind>.<id>, the id base64url-encoded (prefixed "~") unless it is already
// a plain token.
func EntityKey(kind, id string) string {
	if id != "" && safe(id, false) == id {
		return kind + "." + id
	}
	return kind + ".~" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// Dirty is an entity changed since the last TakeDirty, encoded for storage.
type Dirty struct {
	Key   string
	Value []byte
}

// TakeDirty encodes every entity changed since the last call and forgets
// that they changed. The caller must store them before acknowledging any
// message applied before the call (see package ingest). The encodings
// reflect exactly the messages applied so far, since the store lock is held
// throughout; call f, also under the lock, to capture the matching ack
// positions.
func (s *Store) TakeDirty(f func()) ([]Dirty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Dirty, 0, len(s.dirty))
	for e := range s.dirty {
		k := entityKey(e)
		b, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", k, err)
		}
		out = append(out, Dirty{Key: k, Value: b})
	}
	clear(s.dirty)
	if f != nil {
		f()
	}
	return out, nil
}

// Restore loads one stored entity (key as from EntityKey).
func (s *Store) Restore(key string, value []byte) error {
	kind, _, ok := strings.Cut(key, ".")
	if !ok {
		return fmt.Errorf("snapshot key %q: no kind", key)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	bad := func(err error) error { return fmt.Errorf("snapshot %s: %w", key, err) }
	switch kind {
	case KindSchedule:
		var e Schedule
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		s.schedules[e.Name] = &e
	case KindCluster:
		var e Cluster
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		s.clusters[e.Name] = &e
	case KindLogs:
		var e Logs
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		s.logs[e.Cluster+"/"+e.Service] = &e
	case KindAlerts:
		var e Alerts
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		s.alerts = &e
	case KindDaemon:
		var e Daemon
		if err := json.Unmarshal(value, &e); err != nil {
			return bad(err)
		}
		s.daemons[e.Daemon+"/"+e.Instance] = &e
	default:
		return fmt.Errorf("snapshot key %q: unknown kind %q", key, kind)
	}
	return nil
}

// View is read access to the state inside Read. Callers must not modify or
// keep anything they reach through it.
type View struct {
	Schedules map[string]*Schedule
	Clusters  map[string]*Cluster
	Logs      map[string]*Logs
	Alerts    *Alerts
	Daemons   map[string]*Daemon
	Limits    map[string]int64
}

// Read calls f with the state read-locked.
func (s *Store) Read(f func(v View)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f(View{Schedules: s.schedules, Clusters: s.clusters, Logs: s.logs, Alerts: s.alerts, Daemons: s.daemons, Limits: s.limits})
}

// Running is the number of tasks of c not known to be stopped.
func (c *Cluster) Running() int64 { return c.running() }
