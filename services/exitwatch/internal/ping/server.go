package ping

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/runstore"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
)

// Runner is the runner name of ping runs.
const Runner = "ping"

// maxBody is how much of a ping's body (the job's output) is kept.
const maxBody = 1000

// Server serves /ping/... .
type Server struct {
	file  *File
	list  *watchlist.List
	store *runstore.Store
	js    jetstream.JetStream
	subj  v1.Subjects
	log   *slog.Logger
	now   func() time.Time

	mu     sync.Mutex
	starts map[string][]string // check -> run ids started here, oldest first
}

// New returns the ping API over the checks of file (already put into list).
func New(file *File, list *watchlist.List, store *runstore.Store, js jetstream.JetStream, prefix string, log *slog.Logger, now func() time.Time) *Server {
	return &Server{file: file, list: list, store: store, js: js, subj: v1.Subjects{Prefix: prefix}, log: log, now: now, starts: map[string][]string{}}
}

// RunID is the run id of a ping run: from the client's rid when given
// (pairing start and finish), else random.
func RunID(check, rid string) string {
	if rid == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		rid = hex.EncodeToString(b[:])
	}
	sum := sha256.Sum256([]byte(check + "\x00" + rid))
	name := check
	if len(name) > 40 {
		name = name[:40]
	}
	return name + "-p-" + hex.EncodeToString(sum[:8])
}

// ServeHTTP handles GET or POST /ping/[<key>/]<check>[/start|/fail|/<exit-status>].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, POST, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/ping"), "/"), "/")
	if s.file.PingKey != "" {
		if len(parts) < 2 || parts[0] != s.file.PingKey {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		parts = parts[1:]
	}
	if len(parts) == 0 || len(parts) > 2 || parts[0] == "" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	it, ok := s.list.Get(parts[0])
	if !ok || it.Kind != watchlist.KindCheck {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 100<<10))
	rid := r.URL.Query().Get("rid")
	action, code := "success", 0
	if len(parts) == 2 {
		switch parts[1] {
		case "start":
			action = "start"
		case "fail":
			action, code = "fail", 1
		case "log":
			action = "log"
		default:
			n, err := strconv.Atoi(parts[1])
			if err != nil || n < 0 || n > 255 {
				http.Error(w, "not found: want start, fail, log or an exit status 0-255", http.StatusNotFound)
				return
			}
			code = n
			if n != 0 {
				action = "fail"
			}
		}
	}
	if err := s.ping(r.Context(), it, action, code, rid, body); err != nil {
		s.log.Error("ping not recorded", "check", it.Name, "action", action, "err", err)
		http.Error(w, "ping not recorded, try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "OK")
}

// openRun finds the newest started, unfinished ping run of a check (the
// start a finish without rid pairs with): one started through this replica,
// else one another replica started (from the run records).
func (s *Server) openRun(check string) string {
	s.mu.Lock()
	if ids := s.starts[check]; len(ids) > 0 {
		id := ids[len(ids)-1]
		s.starts[check] = ids[:len(ids)-1]
		s.mu.Unlock()
		return id
	}
	s.mu.Unlock()
	var best *v1.RunRecord
	for _, r := range s.store.Snapshot() {
		if r.GetSchedule() != check || r.GetRunner() != Runner || !runstore.Open(r) || !running(r) {
			continue
		}
		if best == nil || r.GetDispatchedAt().AsTime().After(best.GetDispatchedAt().AsTime()) {
			best = r
		}
	}
	if best == nil {
		return ""
	}
	return best.GetRunId()
}

func running(r *v1.RunRecord) bool {
	for _, t := range r.GetTasks() {
		if t.GetLastStatus() == "RUNNING" {
			return true
		}
	}
	return false
}

func (s *Server) forget(check, runID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.starts[check]
	for i, id := range ids {
		if id == runID {
			s.starts[check] = append(ids[:i:i], ids[i+1:]...)
			return
		}
	}
}

func (s *Server) ping(ctx context.Context, it *watchlist.Item, action string, code int, rid string, body []byte) error {
	now := s.now()
	runID := ""
	if rid != "" {
		runID = RunID(it.Name, rid)
	} else if action != "start" {
		runID = s.openRun(it.Name)
	}
	if action == "log" {
		return nil // accepted; logs are not stored
	}
	started := now
	if runID == "" || action == "start" {
		if runID == "" {
			runID = RunID(it.Name, "")
		}
		d := &v1.RunDispatched{RunId: runID, Schedule: it.Name, Cluster: it.Cluster, ScheduledAt: timestamppb.New(now), DispatchedAt: timestamppb.New(now),
			Trigger: v1.Trigger_TRIGGER_MANUAL, Runner: Runner, TaskIds: []string{"ping:" + runID}, TaskCount: 1, Instance: "ping"}
		if it.Timeout > 0 {
			d.Timeout = durationpb.New(it.Timeout)
		}
		if _, err := v1.Publish(ctx, s.js, s.subj.RunDispatched(it.Name), d, runID); err != nil {
			return err
		}
	} else if r, ok := s.store.Get(runID); ok && r.GetStartedAt() != nil {
		started = r.GetStartedAt().AsTime()
	}
	ev := &v1.TaskStateChanged{TaskArn: "ping:" + runID, Cluster: it.Cluster, Schedule: it.Name, RunId: runID, Source: Runner,
		StartedBy: "ping", CreatedAt: timestamppb.New(started), StartedAt: timestamppb.New(started), EventTime: timestamppb.New(now)}
	version := int64(1)
	if action == "start" {
		ev.LastStatus, ev.DesiredStatus = "RUNNING", "RUNNING"
		defer func() {
			s.mu.Lock()
			s.starts[it.Name] = append(s.starts[it.Name], runID)
			if len(s.starts[it.Name]) > 100 {
				s.starts[it.Name] = s.starts[it.Name][1:]
			}
			s.mu.Unlock()
		}()
	} else {
		s.forget(it.Name, runID)
		version = 2
		ev.LastStatus, ev.DesiredStatus = "STOPPED", "STOPPED"
		ev.StoppedAt = timestamppb.New(now)
		ev.StopCode = "EssentialContainerExited"
		ev.StoppedReason = "ping: exit status " + strconv.Itoa(code)
		reason := ""
		if len(body) > 0 {
			reason = excerpt(body)
		}
		ev.Containers = []*v1.ContainerState{{Name: it.Name, LastStatus: "STOPPED", ExitCode: int32(code), HasExitCode: true, Reason: reason, Essential: true}}
	}
	ev.Version = version
	msgID := ev.GetTaskArn() + ":" + strconv.FormatInt(version, 10)
	_, err := v1.Publish(ctx, s.js, s.subj.Task(it.Cluster, it.Name), ev, msgID)
	return err
}

// excerpt keeps the end of the job's output (where the error usually is),
// valid UTF-8, at most maxBody bytes.
func excerpt(b []byte) string {
	if len(b) > maxBody {
		b = b[len(b)-maxBody:]
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:]
		}
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
}
