// Package logsink carries the log lines of locally run tasks (exec runner)
// to the logrouter over Fluent Forward, shaped like the records FireLens
// sends from ECS, or to the daemon's stdout as JSON lines when no logrouter
// is configured.
package logsink

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

// Record is one line a task wrote.
type Record struct {
	Time           time.Time
	Cluster        string // ecs_cluster
	TaskARN        string // ecs_task_arn
	TaskDefinition string // ecs_task_definition
	Container      string // container_name
	Source         string // stdout or stderr
	Log            string
	RunID          string // taskyard_run_id
}

// Fields returns the record in FireLens's field names.
func (r Record) Fields() map[string]string {
	return map[string]string{
		"ecs_cluster":         r.Cluster,
		"ecs_task_arn":        r.TaskARN,
		"ecs_task_definition": r.TaskDefinition,
		"container_name":      r.Container,
		"source":              r.Source,
		"log":                 r.Log,
		"taskyard_run_id":     r.RunID,
	}
}

// Tag is the Fluent tag FireLens would use: <container>-firelens-<task id>.
func (r Record) Tag() string {
	id := r.TaskARN
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '/' {
			id = id[i+1:]
			break
		}
	}
	return r.Container + "-firelens-" + id
}

// Sink receives records.
type Sink interface {
	Write(r Record)
	Close() error
}

// JSON writes one JSON object per record to w.
type JSON struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSON returns a sink writing to w.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w} }

// Write encodes r with its time as RFC 3339.
func (s *JSON) Write(r Record) {
	m := map[string]string{"time": r.Time.UTC().Format(time.RFC3339Nano)}
	for k, v := range r.Fields() {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = s.w.Write(append(b, '\n'))
}

// Close does nothing.
func (s *JSON) Close() error { return nil }

// Forward sends records over Fluent Forward.
type Forward struct {
	f   *fluent.Fluent
	log *slog.Logger
}

// NewForward connects (asynchronously, with retries) to addr host:port.
func NewForward(addr string, log *slog.Logger) (*Forward, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("forward address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("forward address %q: bad port", addr)
	}
	f, err := fluent.New(fluent.Config{
		FluentHost:         host,
		FluentPort:         port,
		Async:              true,
		SubSecondPrecision: true,
		RequestAck:         true,
		MaxRetry:           13,
		Timeout:            3 * time.Second,
		WriteTimeout:       5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("fluent forward to %s: %w", addr, err)
	}
	return &Forward{f: f, log: log}, nil
}

// Write queues r for sending; when the buffer is full the record is
// dropped and logged.
func (s *Forward) Write(r Record) {
	if err := s.f.PostWithTime(r.Tag(), r.Time, r.Fields()); err != nil {
		s.log.Warn("forward log record", "task", r.TaskARN, "err", err)
	}
}

// closeTimeout bounds Close: the client retries sending buffered records
// with backoff, which must not hold a shutdown when the logrouter is gone.
const closeTimeout = 10 * time.Second

// Close flushes what is buffered and disconnects. When the logrouter does
// not take the buffered records within closeTimeout, Close returns an error
// saying so and leaves the client to give up in the background.
func (s *Forward) Close() error {
	done := make(chan error, 1)
	go func() { done <- s.f.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeTimeout):
		return fmt.Errorf("forward: buffered log records not delivered within %s of shutdown", closeTimeout)
	}
}
