// Package control answers the scheduler's request/reply subjects
// <prefix>.ctl.scheduler.<verb>. Each verb is its own subject so that NATS
// permissions can grant them separately:
//
//	list, get, next   read only
//	apply             update schedules that exist (no creation, no deletion)
//	create            update, and create schedules that do not exist yet
//	prune             update, create and delete (the full reconcile)
//	enable, disable   flip schedule.enabled
//	trigger           run a schedule now (answered by the leader only)
//
// Requests and replies are the protobuf messages of control.proto. Apply,
// create and prune validate every schedule of the request before writing
// any, so one invalid schedule means nothing is applied.
package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/schedule"
	"github.com/taskyard/taskyard/services/scheduler/internal/clock"
	"github.com/taskyard/taskyard/services/scheduler/internal/engine"
	"github.com/taskyard/taskyard/services/scheduler/internal/specdiff"
)

// Daemon is the daemon token of the control subjects.
const Daemon = "scheduler"

// Verbs.
const (
	VerbList    = "list"
	VerbGet     = "get"
	VerbApply   = "apply"
	VerbCreate  = "create"
	VerbPrune   = "prune"
	VerbEnable  = "enable"
	VerbDisable = "disable"
	VerbTrigger = "trigger"
	VerbNext    = "next"
)

// QueueGroup spreads read and write verbs over the replicas.
const QueueGroup = "taskyard-scheduler"

// MaxNext caps NameRequest.count for next.
const MaxNext = 1000

// Config wires a Server.
type Config struct {
	Prefix    string
	NC        *nats.Conn
	Schedules jetstream.KeyValue
	State     jetstream.KeyValue
	// Profiles by name; when not empty, schedules must name one of them.
	Profiles map[string]*schedule.Profile
	Engine   *engine.Engine
	Clock    clock.Clock
	Log      *slog.Logger
}

// Server answers control requests.
type Server struct {
	cfg   Config
	subj  v1.Subjects
	apply sync.Mutex
}

// New returns a Server; call Run.
func New(cfg Config) *Server {
	return &Server{cfg: cfg, subj: v1.Subjects{Prefix: cfg.Prefix}}
}

// Run subscribes and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	type route struct {
		verb  string
		queue bool
		h     func(ctx context.Context, data []byte) proto.Message
	}
	routes := []route{
		{VerbList, true, s.list},
		{VerbGet, true, s.get},
		{VerbNext, true, s.next},
		{VerbApply, true, func(ctx context.Context, d []byte) proto.Message { return s.applyVerb(ctx, d, false, false) }},
		{VerbCreate, true, func(ctx context.Context, d []byte) proto.Message { return s.applyVerb(ctx, d, true, false) }},
		{VerbPrune, true, func(ctx context.Context, d []byte) proto.Message { return s.applyVerb(ctx, d, true, true) }},
		{VerbEnable, true, func(ctx context.Context, d []byte) proto.Message { return s.setEnabled(ctx, d, true) }},
		{VerbDisable, true, func(ctx context.Context, d []byte) proto.Message { return s.setEnabled(ctx, d, false) }},
		// Every replica hears trigger; only the leader answers.
		{VerbTrigger, false, s.trigger},
	}
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	for _, r := range routes {
		subject := s.subj.Ctl(Daemon, r.verb)
		handler := func(m *nats.Msg) {
			hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			reply := r.h(hctx, m.Data)
			if reply == nil || m.Reply == "" {
				return
			}
			data, err := proto.Marshal(reply)
			if err != nil {
				s.cfg.Log.Error("marshal control reply", "subject", m.Subject, "err", err)
				return
			}
			if err := m.Respond(data); err != nil {
				s.cfg.Log.Warn("control reply", "subject", m.Subject, "err", err)
			}
		}
		var sub *nats.Subscription
		var err error
		if r.queue {
			sub, err = s.cfg.NC.QueueSubscribe(subject, QueueGroup, handler)
		} else {
			sub, err = s.cfg.NC.Subscribe(subject, handler)
		}
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		subs = append(subs, sub)
	}
	<-ctx.Done()
	return nil
}

func (s *Server) readSpec(ctx context.Context, name string) (*v1.ScheduleSpec, uint64, error) {
	e, err := s.cfg.Schedules.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read schedule %s: %w", name, err)
	}
	spec := &v1.ScheduleSpec{}
	if err := proto.Unmarshal(e.Value(), spec); err != nil {
		return nil, 0, fmt.Errorf("decode schedule %s: %w", name, err)
	}
	return spec, e.Revision(), nil
}

func (s *Server) allSpecs(ctx context.Context) ([]*v1.ScheduleSpec, error) {
	keys, err := s.cfg.Schedules.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]*v1.ScheduleSpec, 0, len(names))
	for _, n := range names {
		spec, _, err := s.readSpec(ctx, n)
		if err != nil {
			return nil, err
		}
		if spec != nil {
			out = append(out, spec)
		}
	}
	return out, nil
}

func (s *Server) status(ctx context.Context, spec *v1.ScheduleSpec) *v1.ScheduleStatus {
	st := &v1.ScheduleStatus{Spec: spec}
	if e, err := s.cfg.State.Get(ctx, spec.GetName()); err == nil {
		state := &v1.ScheduleState{}
		if proto.Unmarshal(e.Value(), state) == nil {
			st.LastFire, st.LastOutcome, st.LastRunId = state.GetLastFire(), state.GetLastOutcome(), state.GetLastRunId()
		}
	}
	if spec.GetTiming().GetEnabled() {
		if expr, err := engine.ParseTiming(spec); err == nil && expr != nil {
			if n := expr.Next(s.cfg.Clock.Now()); !n.IsZero() {
				st.NextFire = timestamppb.New(n)
			}
		}
	}
	return st
}

func (s *Server) list(ctx context.Context, _ []byte) proto.Message {
	specs, err := s.allSpecs(ctx)
	if err != nil {
		return &v1.ListReply{Error: err.Error()}
	}
	reply := &v1.ListReply{}
	for _, spec := range specs {
		reply.Schedules = append(reply.Schedules, s.status(ctx, spec))
	}
	return reply
}

func (s *Server) get(ctx context.Context, data []byte) proto.Message {
	req := &v1.NameRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return &v1.ListReply{Error: "decode request: " + err.Error()}
	}
	spec, _, err := s.readSpec(ctx, req.GetName())
	switch {
	case err != nil:
		return &v1.ListReply{Error: err.Error()}
	case spec == nil:
		return &v1.ListReply{Error: fmt.Sprintf("no schedule named %q", req.GetName())}
	}
	return &v1.ListReply{Schedules: []*v1.ScheduleStatus{s.status(ctx, spec)}}
}

func (s *Server) next(ctx context.Context, data []byte) proto.Message {
	req := &v1.NameRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return &v1.NextReply{Error: "decode request: " + err.Error()}
	}
	spec, _, err := s.readSpec(ctx, req.GetName())
	switch {
	case err != nil:
		return &v1.NextReply{Error: err.Error()}
	case spec == nil:
		return &v1.NextReply{Error: fmt.Sprintf("no schedule named %q", req.GetName())}
	}
	expr, err := engine.ParseTiming(spec)
	if err != nil {
		return &v1.NextReply{Error: err.Error()}
	}
	if expr == nil {
		return &v1.NextReply{Error: fmt.Sprintf("schedule %q is manual: it only fires through `taskyard run`", spec.GetName())}
	}
	n := int(req.GetCount())
	if n <= 0 {
		n = 5
	}
	n = min(n, MaxNext)
	from := s.cfg.Clock.Now()
	if req.GetFrom() != nil {
		from = req.GetFrom().AsTime()
	}
	reply := &v1.NextReply{}
	for t := expr.Next(from); !t.IsZero() && len(reply.Times) < n; t = expr.Next(t) {
		reply.Times = append(reply.Times, timestamppb.New(t))
	}
	return reply
}

func (s *Server) trigger(ctx context.Context, data []byte) proto.Message {
	if !s.cfg.Engine.Leading() {
		return nil // the leader answers
	}
	req := &v1.NameRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return &v1.TriggerReply{Error: "decode request: " + err.Error()}
	}
	runID, err := s.cfg.Engine.Trigger(ctx, req.GetName())
	reply := &v1.TriggerReply{RunId: runID}
	if err != nil {
		reply.Error = err.Error()
	}
	s.cfg.Log.Info("manual trigger", "schedule", req.GetName(), "by", req.GetRequestedBy(), "run_id", runID, "err", reply.Error)
	return reply
}

func (s *Server) setEnabled(ctx context.Context, data []byte, on bool) proto.Message {
	req := &v1.NameRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return &v1.AckReply{Error: "decode request: " + err.Error()}
	}
	s.apply.Lock()
	defer s.apply.Unlock()
	spec, rev, err := s.readSpec(ctx, req.GetName())
	switch {
	case err != nil:
		return &v1.AckReply{Error: err.Error()}
	case spec == nil:
		return &v1.AckReply{Error: fmt.Sprintf("no schedule named %q", req.GetName())}
	}
	if spec.Timing == nil {
		spec.Timing = &v1.Timing{}
	}
	if spec.Timing.Enabled == on {
		return &v1.AckReply{}
	}
	spec.Timing.Enabled = on
	spec.AppliedAt = timestamppb.New(s.cfg.Clock.Now())
	spec.AppliedBy = req.GetRequestedBy()
	b, _ := proto.Marshal(spec)
	if _, err := s.cfg.Schedules.Update(ctx, spec.GetName(), b, rev); err != nil {
		return &v1.AckReply{Error: fmt.Sprintf("update schedule %s: %v", spec.GetName(), err)}
	}
	s.cfg.Log.Info("schedule enabled changed", "schedule", spec.GetName(), "enabled", on, "by", req.GetRequestedBy())
	return &v1.AckReply{}
}

// Validate checks a spec as the daemon will run it: every rule of a
// schedule file (schedule.ScheduleFromProto), the cluster profile it names
// when the scheduler has profiles, and that it fits that profile.
func Validate(spec *v1.ScheduleSpec, profiles map[string]*schedule.Profile) []string {
	name := spec.GetName()
	prefix := fmt.Sprintf("schedule %q: ", name)
	if f := spec.GetSourceFile(); f != "" {
		prefix = fmt.Sprintf("schedule %q (%s): ", name, f)
	}
	s, err := schedule.ScheduleFromProto(spec)
	if err != nil {
		var probs schedule.Problems
		if errors.As(err, &probs) {
			out := make([]string, 0, len(probs))
			for _, p := range probs {
				out = append(out, prefix+p.String())
			}
			return out
		}
		return []string{prefix + err.Error()}
	}
	if len(profiles) == 0 {
		return nil
	}
	p := profiles[spec.GetCluster()]
	if p == nil {
		known := make([]string, 0, len(profiles))
		for k := range profiles {
			known = append(known, k)
		}
		slices.Sort(known)
		return []string{fmt.Sprintf("%scluster: no cluster profile %q on the scheduler (known: %s)", prefix, spec.GetCluster(), strings.Join(known, ", "))}
	}
	if err := s.ValidateWith(p); err != nil {
		return []string{prefix + err.Error()}
	}
	return nil
}

func (s *Server) applyVerb(ctx context.Context, data []byte, allowCreate, allowDelete bool) proto.Message {
	req := &v1.ApplyRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		return &v1.ApplyReply{Error: "decode request: " + err.Error()}
	}
	s.apply.Lock()
	defer s.apply.Unlock()
	reply, writes := s.plan(ctx, req, allowCreate, allowDelete)
	if reply.Error != "" || req.GetDryRun() {
		return reply
	}
	now := timestamppb.New(s.cfg.Clock.Now())
	for _, w := range writes {
		var err error
		switch {
		case w.spec == nil:
			err = s.cfg.Schedules.Delete(ctx, w.name, jetstream.LastRevision(w.rev))
			if err == nil {
				_ = s.cfg.State.Purge(ctx, w.name)
			}
		case w.rev == 0:
			w.spec.AppliedAt, w.spec.AppliedBy = now, req.GetAppliedBy()
			b, _ := proto.Marshal(w.spec)
			_, err = s.cfg.Schedules.Create(ctx, w.name, b)
		default:
			w.spec.AppliedAt, w.spec.AppliedBy = now, req.GetAppliedBy()
			b, _ := proto.Marshal(w.spec)
			_, err = s.cfg.Schedules.Update(ctx, w.name, b, w.rev)
		}
		if err != nil {
			// Validation passed for everything; this is a concurrent
			// writer or a NATS failure.
			reply.Error = fmt.Sprintf("write schedule %s: %v (schedules before it in this request were applied)", w.name, err)
			return reply
		}
	}
	reply.Applied = true
	s.cfg.Log.Info("schedules applied", "by", req.GetAppliedBy(), "changes", len(reply.Changes), "writes", len(writes))
	return reply
}

type write struct {
	name string
	spec *v1.ScheduleSpec // nil: delete
	rev  uint64
}

func (s *Server) plan(ctx context.Context, req *v1.ApplyRequest, allowCreate, allowDelete bool) (*v1.ApplyReply, []write) {
	reply := &v1.ApplyReply{}
	var probs []string
	seen := map[string]bool{}
	var writes []write
	for _, spec := range req.GetSchedules() {
		if seen[spec.GetName()] {
			probs = append(probs, fmt.Sprintf("schedule %q: given twice", spec.GetName()))
			continue
		}
		seen[spec.GetName()] = true
		probs = append(probs, Validate(spec, s.cfg.Profiles)...)
	}
	if len(req.GetDelete()) > 0 && !allowDelete {
		probs = append(probs, fmt.Sprintf("deleting %s needs --prune (subject %s)", strings.Join(req.GetDelete(), ", "), s.subj.Ctl(Daemon, VerbPrune)))
	}
	if len(probs) > 0 {
		reply.Error = strings.Join(probs, "\n")
		return reply, nil
	}
	for _, spec := range req.GetSchedules() {
		old, rev, err := s.readSpec(ctx, spec.GetName())
		if err != nil {
			probs = append(probs, err.Error())
			continue
		}
		if old == nil && !allowCreate {
			probs = append(probs, fmt.Sprintf("schedule %q does not exist; creating it needs --create (subject %s)", spec.GetName(), s.subj.Ctl(Daemon, VerbCreate)))
			continue
		}
		changes := specdiff.Diff(old, spec)
		if len(changes) == 0 {
			continue
		}
		reply.Changes = append(reply.Changes, changes...)
		writes = append(writes, write{name: spec.GetName(), spec: proto.Clone(spec).(*v1.ScheduleSpec), rev: rev})
	}
	for _, name := range req.GetDelete() {
		if seen[name] {
			probs = append(probs, fmt.Sprintf("schedule %q: both applied and deleted", name))
			continue
		}
		old, rev, err := s.readSpec(ctx, name)
		if err != nil {
			probs = append(probs, err.Error())
			continue
		}
		if old == nil {
			continue
		}
		reply.Changes = append(reply.Changes, specdiff.Diff(old, nil)...)
		writes = append(writes, write{name: name, rev: rev})
	}
	if len(probs) > 0 {
		return &v1.ApplyReply{Error: strings.Join(probs, "\n")}, nil
	}
	return reply, writes
}
