package tracker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/verdict"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
)

// maxMissedPerTick bounds how many missed fires of one schedule are
// reported at once (the newest ones) after a long outage.
const maxMissedPerTick = 10

// Tick evaluates every time-based rule once. Run calls it every
// Config.Tick; tests call it directly with an injected clock.
func (t *Tracker) Tick(ctx context.Context) {
	now := t.Now()
	wall := t.d.Now()
	recs := t.d.Store.Snapshot()
	for _, r := range recs {
		if ctx.Err() != nil {
			return
		}
		if err := t.tickRun(ctx, r, now, wall); err != nil {
			t.d.Log.Error("rule evaluation", "run_id", r.GetRunId(), "err", err)
		}
	}
	for _, it := range t.d.List.All() {
		if ctx.Err() != nil {
			return
		}
		var err error
		if it.Kind == watchlist.KindCheck {
			err = t.checkPing(ctx, it, now)
		} else {
			err = t.checkMissed(ctx, it, now)
		}
		if err != nil {
			t.d.Log.Error("missed-fire rule", "schedule", it.Name, "err", err)
		}
		if err := t.checkNoSuccess(ctx, it, now); err != nil {
			t.d.Log.Error("no-success rule", "schedule", it.Name, "err", err)
		}
	}
	t.checkOverlap(ctx, recs)
	t.checkCapacity(ctx, recs, wall)
	if err := t.maybeSummary(ctx, recs, wall); err != nil {
		t.d.Log.Error("summary", "err", err)
	}
	t.d.Store.Prune(wall, t.keep)
}

// keep says which finished records the rules still need in memory:
// those with unpublished decisions, and those a silent_run may still be
// raised for. Everything else is in KV.
func (t *Tracker) keep(r *v1.RunRecord) bool {
	if len(unsent(r)) > 0 {
		return true
	}
	it := t.item(r)
	return it != nil && it.Logs && !has(r, KindSilentRun) && ran(r) && r.GetFinishedAt() != nil &&
		t.Now().Sub(r.GetFinishedAt().AsTime()) <= t.cfg.SilentGrace+time.Minute
}

func (t *Tracker) tickRun(ctx context.Context, r *v1.RunRecord, now, wall time.Time) error {
	if todo := unsent(r); len(todo) > 0 {
		// Decided but not (yet) marked published: another replica may be
		// on it; after 20s it is ours to publish.
		t.mu.Lock()
		since, ok := t.unsentSince[r.GetRunId()]
		if !ok {
			t.unsentSince[r.GetRunId()] = wall
		}
		t.mu.Unlock()
		if ok && wall.Sub(since) > 20*time.Second {
			if err := t.flush(ctx, r); err != nil {
				return err
			}
		}
	}
	it := t.item(r)
	if !runstore.Open(r) {
		if it != nil && it.Logs && !has(r, KindSilentRun) && r.GetLogRecords() == 0 && r.GetFinishedAt() != nil &&
			ran(r) && now.Sub(r.GetFinishedAt().AsTime()) > t.cfg.SilentGrace {
			return t.decide(ctx, r.GetRunId(), KindSilentRun)
		}
		return nil
	}
	real := realTasks(r)
	switch {
	case len(real) == 0 && r.GetDispatchedAt() != nil && now.Sub(r.GetDispatchedAt().AsTime()) > t.cfg.LostAfter:
		return t.finalize(ctx, r.GetRunId(), func(x *v1.RunRecord) *verdict.Result {
			if len(realTasks(x)) > 0 {
				return nil
			}
			return &verdict.Result{Outcome: v1.Outcome_OUTCOME_LOST, Reason: fmt.Sprintf("dispatched, but no task event arrived within %s", t.cfg.LostAfter), FinishedAt: now}
		})
	case len(real) > 0:
		if err := t.evaluate(ctx, r, now); err != nil {
			return err
		}
	}
	if to := timeoutOf(r, it); to > 0 && r.GetStartedAt() != nil && now.Sub(r.GetStartedAt().AsTime()) > to && !has(r, KindOverrun) {
		if err := t.decide(ctx, r.GetRunId(), KindOverrun); err != nil {
			return err
		}
		if t.cfg.StopOverrun && t.d.Stopper != nil {
			for _, x := range real {
				if x.GetLastStatus() == "STOPPED" {
					continue
				}
				if err := t.d.Stopper.StopTask(ctx, x.GetClusterArn(), x.GetTaskArn(), verdict.StopReasonTimeout+" of "+to.String()); err != nil {
					t.d.Log.Warn("stop task past its timeout", "task_arn", x.GetTaskArn(), "err", err)
				}
			}
		}
	}
	for _, x := range real {
		switch x.GetLastStatus() {
		case "RUNNING", "STOPPED", "DEACTIVATING", "STOPPING", "DEPROVISIONING":
			continue
		}
		if x.GetCreatedAt() != nil && now.Sub(x.GetCreatedAt().AsTime()) > t.cfg.StuckPendingAfter && !has(r, KindStuckPending) {
			return t.decide(ctx, r.GetRunId(), KindStuckPending)
		}
	}
	return nil
}

// ran reports whether a finished run got as far as running its tasks.
func ran(r *v1.RunRecord) bool {
	switch r.GetOutcome() {
	case v1.Outcome_OUTCOME_SUCCEEDED, v1.Outcome_OUTCOME_FAILED, v1.Outcome_OUTCOME_TIMED_OUT:
		return true
	}
	return false
}

// checkMissed judges the expected fires of a schedule: a fire whose
// startingDeadline plus grace passed (by the bus's clock) with no dispatch,
// skip or failure recorded under its run id is missed. Silent while the
// schedule is disabled.
func (t *Tracker) checkMissed(ctx context.Context, it *watchlist.Item, now time.Time) error {
	if !it.Enabled || it.Expr == nil {
		return nil
	}
	cutoff := now.Add(-it.StartingDeadline - t.cfg.MissedGrace)
	// From the newest decided fire (so fires missed while exitwatch itself
	// was down are still judged), but never from before the schedule was
	// (re-)enabled or applied; with no history, from when it was first
	// seen.
	agg := t.d.Store.Agg(it.Name)
	from := agg.LastDecided
	if from.IsZero() {
		from = it.Since
	}
	for _, x := range []time.Time{it.EnabledAt, it.AppliedAt} {
		if x.After(from) {
			from = x
		}
	}
	if lb := t.start.Add(-t.cfg.MissedLookback); from.Before(lb) {
		from = lb
	}
	var fires []time.Time
	for e := it.Expr.Next(from); !e.IsZero() && !e.After(cutoff); e = it.Expr.Next(e) {
		fires = append(fires, e)
		if len(fires) > 1000 {
			fires = fires[1:]
		}
	}
	if len(fires) > maxMissedPerTick {
		fires = fires[len(fires)-maxMissedPerTick:]
	}
	for _, e := range fires {
		why := fmt.Sprintf("expected at %s; no dispatch, skip or failure by its starting deadline (%s) plus grace (%s)",
			e.UTC().Format(time.RFC3339), it.StartingDeadline, t.cfg.MissedGrace)
		if err := t.missed(ctx, it, v1.RunID(it.Name, e, v1.Trigger_TRIGGER_SCHEDULE), e, now, why); err != nil {
			return err
		}
	}
	return nil
}

// missed records a missed fire with Create (so exactly one replica, and
// never a run that was decided meanwhile, raises it) and publishes it.
func (t *Tracker) missed(ctx context.Context, it *watchlist.Item, runID string, expected, now time.Time, why string) error {
	if _, ok := t.d.Store.Get(runID); ok {
		return nil
	}
	if _, _, err := t.d.Store.Fetch(ctx, runID); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	rec, changed, err := t.d.Store.Update(ctx, runID, func() *v1.RunRecord {
		return &v1.RunRecord{RunId: runID, Schedule: it.Name, Cluster: it.Cluster, Trigger: v1.Trigger_TRIGGER_SCHEDULE,
			ScheduledAt: timestamppb.New(expected), FinishedAt: timestamppb.New(now),
			Reason: runstore.MissedReasonPrefix + ": " + why, Alerted: []string{KindMissed}}
	}, func(*v1.RunRecord) bool { return false }) // an existing record means the fire was decided
	if err != nil || !changed {
		return err
	}
	return t.flush(ctx, rec)
}

// checkPing judges a ping check: down when the next expected ping (last
// ping + period, or the cron fire after it) plus grace has passed.
func (t *Tracker) checkPing(ctx context.Context, it *watchlist.Item, now time.Time) error {
	if !it.Enabled {
		return nil
	}
	agg := t.d.Store.Agg(it.Name)
	last := it.Since
	if agg.LastActivity.After(last) {
		last = agg.LastActivity
	}
	var expected time.Time
	switch {
	case it.Period > 0:
		expected = last.Add(it.Period)
	case it.Expr != nil:
		expected = it.Expr.Next(last)
	}
	if expected.IsZero() || !now.After(expected.Add(it.Grace)) {
		return nil
	}
	why := fmt.Sprintf("no ping since %s; expected by %s plus grace %s", last.UTC().Format(time.RFC3339), expected.UTC().Format(time.RFC3339), it.Grace)
	return t.missed(ctx, it, v1.RunID(it.Name, expected, v1.Trigger_TRIGGER_SCHEDULE), expected, now, why)
}

// checkNoSuccess is the dead man's switch: no success within
// expectations.succeedWithin.
func (t *Tracker) checkNoSuccess(ctx context.Context, it *watchlist.Item, now time.Time) error {
	if it.SucceedWithin <= 0 || !it.Enabled {
		return nil
	}
	agg := t.d.Store.Agg(it.Name)
	since := it.Since
	if agg.LastSuccess.After(since) {
		since = agg.LastSuccess
	}
	key := "no_success:" + it.Name
	down := now.Sub(since) > it.SucceedWithin
	t.mu.Lock()
	open := t.incidents[key]
	t.incidents[key] = down
	t.mu.Unlock()
	base := &v1.Alert{Kind: KindNoSuccess, DedupeKey: key, Schedule: it.Name, Cluster: it.Cluster, RunbookUrl: it.Runbook, Channel: it.Channel,
		Severity: it.Severity, Fields: map[string]string{"succeed_within": it.SucceedWithin.String()}}
	if !agg.LastSuccess.IsZero() {
		base.Fields["last_success"] = agg.LastSuccess.UTC().Format(time.RFC3339)
	}
	switch {
	case down && !open:
		base.Title = fmt.Sprintf("%s has not succeeded for %s", it.Name, now.Sub(since).Round(time.Minute))
		base.Text = fmt.Sprintf("expectations.succeedWithin is %s.", it.SucceedWithin)
		// The id depends only on what every replica sees (the last
		// success), so two replicas raise it once.
		id := "never"
		if !agg.LastSuccess.IsZero() {
			id = strconv.FormatInt(agg.LastSuccess.Unix(), 10)
		}
		return t.PublishAlert(ctx, base, key+":"+id)
	case !down && open:
		base.Resolved, base.Kind, base.Severity = true, KindRecovered, v1.Severity_SEVERITY_INFO
		base.Title = fmt.Sprintf("%s succeeded again", it.Name)
		return t.PublishAlert(ctx, base, key+":resolved:"+strconv.FormatInt(agg.LastSuccess.Unix(), 10))
	}
	return nil
}

// activeTasks counts the tasks of open runs that have not stopped.
func activeTasks(r *v1.RunRecord) int {
	if !runstore.Open(r) {
		return 0
	}
	n := 0
	for _, x := range realTasks(r) {
		if x.GetLastStatus() != "STOPPED" {
			n++
		}
	}
	return n
}

// checkOverlap raises overlap when a schedule has more tasks at once than
// its concurrency allows.
func (t *Tracker) checkOverlap(ctx context.Context, recs []*v1.RunRecord) {
	type acc struct {
		tasks  int
		newest *v1.RunRecord
	}
	per := map[string]*acc{}
	for _, r := range recs {
		n := activeTasks(r)
		if n == 0 || r.GetSchedule() == "" {
			continue
		}
		a := per[r.GetSchedule()]
		if a == nil {
			a = &acc{}
			per[r.GetSchedule()] = a
		}
		a.tasks += n
		if a.newest == nil || r.GetRunId() > a.newest.GetRunId() {
			a.newest = r
		}
	}
	for _, it := range t.d.List.All() {
		if it.Kind != watchlist.KindSchedule {
			continue
		}
		runs := t.cfg.OverlapRuns
		if it.Concurrency == "forbid" || it.Concurrency == "replace" {
			runs = 1
		}
		allowed := runs * it.TaskCount
		a := per[it.Name]
		key := "overlap:" + it.Name
		over := a != nil && a.tasks > allowed
		t.mu.Lock()
		open := t.incidents[key]
		t.incidents[key] = over
		opened := t.overlapRun[it.Name]
		if over && !open {
			t.overlapRun[it.Name] = a.newest.GetRunId()
		}
		t.mu.Unlock()
		al := &v1.Alert{Kind: KindOverlap, DedupeKey: key, Schedule: it.Name, Cluster: it.Cluster, RunbookUrl: it.Runbook, Channel: it.Channel,
			Severity: v1.Severity_SEVERITY_WARNING, Fields: map[string]string{"allowed_tasks": strconv.Itoa(allowed), "concurrency": it.Concurrency}}
		var err error
		switch {
		case over && !open:
			al.RunId = a.newest.GetRunId()
			al.Fields["running_tasks"] = strconv.Itoa(a.tasks)
			al.Title = fmt.Sprintf("%s has %d tasks running at once (allowed %d)", it.Name, a.tasks, allowed)
			al.Text = "Runs of the schedule overlap: a run is still going when the next starts."
			err = t.PublishAlert(ctx, al, key+":"+a.newest.GetRunId())
		case !over && open:
			al.Resolved = true
			al.Title = fmt.Sprintf("%s no longer overlaps", it.Name)
			err = t.PublishAlert(ctx, al, key+":resolved:"+opened)
		}
		if err != nil {
			t.d.Log.Error("overlap alert", "schedule", it.Name, "err", err)
		}
	}
}

// runningByCluster counts running tasks per cluster profile.
func (t *Tracker) runningByCluster(recs []*v1.RunRecord) map[string]int {
	out := map[string]int{}
	for _, r := range recs {
		if n := activeTasks(r); n > 0 {
			out[t.clusterOf(r.GetCluster())] += n
		}
	}
	return out
}

// checkCapacity raises cluster_capacity at 80 % of a profile's taskLimit
// (critical at 100 %) and resolves it below 80 %.
func (t *Tracker) checkCapacity(ctx context.Context, recs []*v1.RunRecord, wall time.Time) {
	running := t.runningByCluster(recs)
	for _, c := range t.cfg.Clusters {
		if c.TaskLimit <= 0 {
			continue
		}
		n := running[c.Name]
		level := ""
		switch {
		case n >= c.TaskLimit:
			level = "critical"
		case n*100 >= c.TaskLimit*80:
			level = "warning"
		}
		key := "capacity:" + c.Name
		t.mu.Lock()
		prev := ""
		for _, l := range []string{"critical", "warning"} {
			if t.incidents[key+":"+l] {
				prev = l
			}
		}
		t.incidents[key+":critical"] = level == "critical"
		t.incidents[key+":warning"] = level == "warning"
		t.mu.Unlock()
		if level == prev {
			continue
		}
		a := &v1.Alert{Kind: KindClusterCapacity, DedupeKey: key, Cluster: c.Name,
			Fields: map[string]string{"running_tasks": strconv.Itoa(n), "task_limit": strconv.Itoa(c.TaskLimit)}}
		pct := n * 100 / c.TaskLimit
		switch level {
		case "critical":
			a.Severity = v1.Severity_SEVERITY_CRITICAL
			a.Title = fmt.Sprintf("cluster %s is at its task limit: %d of %d tasks", c.Name, n, c.TaskLimit)
		case "warning":
			a.Severity = v1.Severity_SEVERITY_WARNING
			a.Title = fmt.Sprintf("cluster %s is at %d%% of its task limit: %d of %d tasks", c.Name, pct, n, c.TaskLimit)
		default:
			a.Severity, a.Resolved = v1.Severity_SEVERITY_INFO, true
			a.Title = fmt.Sprintf("cluster %s is back under 80%% of its task limit: %d of %d tasks", c.Name, n, c.TaskLimit)
		}
		a.Text = "Runs are skipped (cluster_quota) once the limit is reached."
		if err := t.PublishAlert(ctx, a, fmt.Sprintf("%s:%s:%d", key, level, wall.Unix()/60)); err != nil {
			t.d.Log.Error("capacity alert", "cluster", c.Name, "err", err)
		}
	}
}

// maybeSummary publishes the periodic summary once per window (windows are
// aligned to the period, so replicas publish the same Nats-Msg-Id).
func (t *Tracker) maybeSummary(ctx context.Context, recs []*v1.RunRecord, wall time.Time) error {
	every := t.cfg.SummaryEvery
	if every <= 0 {
		return nil
	}
	end := wall.Truncate(every)
	t.mu.Lock()
	if t.lastSummary.IsZero() {
		t.lastSummary = end // first window starts now
		t.mu.Unlock()
		return nil
	}
	if !end.After(t.lastSummary) {
		t.mu.Unlock()
		return nil
	}
	t.lastSummary = end
	t.mu.Unlock()
	a := BuildSummary(recs, t.d.Store.Finished(end.Add(-every), end), t.cfg.Clusters, t.runningByCluster(recs), t.clusterOf, end.Add(-every), end)
	return t.PublishAlert(ctx, a, "summary:"+strconv.FormatInt(end.Unix(), 10))
}

// BuildSummary renders the summary of the window (from, to]: per cluster
// running tasks against the limit, runs succeeded and failed, failing
// schedules and the longest running task.
func BuildSummary(recs []*v1.RunRecord, finished map[string]*runstore.Counts, clusters map[string]Cluster, running map[string]int, clusterOf func(string) string, from, to time.Time) *v1.Alert {
	type stat struct {
		ok, failed int
		failing    map[string]bool
	}
	per := map[string]*stat{}
	get := func(c string) *stat {
		s := per[c]
		if s == nil {
			s = &stat{failing: map[string]bool{}}
			per[c] = s
		}
		return s
	}
	for name := range clusters {
		get(name)
	}
	for name := range running {
		get(name)
	}
	var longest *v1.RunRecord
	for _, r := range recs {
		if runstore.Open(r) && activeTasks(r) > 0 && r.GetStartedAt() != nil && (longest == nil || r.GetStartedAt().AsTime().Before(longest.GetStartedAt().AsTime())) {
			longest = r
		}
	}
	for cl, c := range finished {
		s := get(clusterOf(cl))
		s.ok += c.Succeeded
		s.failed += c.Failed
		for f := range c.Failing {
			s.failing[f] = true
		}
	}
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	// Each summary is its own message (not a thread of repeats).
	a := &v1.Alert{Kind: KindSummary, Severity: v1.Severity_SEVERITY_INFO, DedupeKey: "summary:" + to.UTC().Format(time.RFC3339), Fields: map[string]string{},
		Time: timestamppb.New(to), Title: fmt.Sprintf("taskyard summary %s – %s", from.UTC().Format("15:04"), to.UTC().Format("15:04 UTC"))}
	var b strings.Builder
	for _, n := range names {
		s := per[n]
		limit := "no limit"
		if c, ok := clusters[n]; ok && c.TaskLimit > 0 {
			limit = fmt.Sprintf("limit %d", c.TaskLimit)
			a.Fields["cluster."+n+".task_limit"] = strconv.Itoa(c.TaskLimit)
		}
		fmt.Fprintf(&b, "%s: %d running (%s), %d succeeded, %d failed", n, running[n], limit, s.ok, s.failed)
		a.Fields["cluster."+n+".running"] = strconv.Itoa(running[n])
		a.Fields["cluster."+n+".succeeded"] = strconv.Itoa(s.ok)
		a.Fields["cluster."+n+".failed"] = strconv.Itoa(s.failed)
		if len(s.failing) > 0 {
			f := make([]string, 0, len(s.failing))
			for x := range s.failing {
				f = append(f, x)
			}
			sort.Strings(f)
			fmt.Fprintf(&b, "; failing: %s", strings.Join(f, ", "))
			a.Fields["cluster."+n+".failing"] = strings.Join(f, ",")
		}
		b.WriteString("\n")
	}
	if longest != nil {
		d := to.Sub(longest.GetStartedAt().AsTime()).Round(time.Second)
		fmt.Fprintf(&b, "longest running: %s (run %s) for %s\n", longest.GetSchedule(), longest.GetRunId(), d)
		a.Fields["longest_running"] = longest.GetRunId()
		a.Fields["longest_running_for"] = d.String()
	}
	a.Text = strings.TrimSpace(b.String())
	return a
}
