// Package pipeline turns a Forward record into a tagged event: it picks the
// log line, applies redaction and the size limit, parses JSON lines
// (ONLY_JSON policy), normalizes the level, and derives cluster / service /
// container / task / run id from FireLens fields or taskyard's own runner
// fields.
package pipeline

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/record"
)

// Redaction replaces every match of Pattern in a line with Mask.
type Redaction struct {
	Pattern *regexp.Regexp
	Mask    string
}

// Config configures the pipeline.
type Config struct {
	// DropNonJSON drops lines that are not a JSON object (ONLY_JSON policy
	// "drop"); otherwise they are kept as plain lines.
	DropNonJSON bool
	// MaxRecordBytes is the line size limit (default 1 MiB); longer lines
	// are truncated and flagged.
	MaxRecordBytes int
	Redact         []Redaction
	// DefaultCluster and DefaultService fill tags the record does not give.
	DefaultCluster, DefaultService string
}

// Counters are the pipeline's own counts.
type Counters struct {
	Records, DroppedNonJSON, Truncated, InvalidUTF8, Redacted atomic.Int64
}

// Pipeline is safe for concurrent use.
type Pipeline struct {
	c Config
	// C is read by the stats endpoint.
	C Counters
}

// New returns a pipeline.
func New(c Config) *Pipeline {
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = 1 << 20
	}
	if c.DefaultCluster == "" {
		c.DefaultCluster = "unknown"
	}
	if c.DefaultService == "" {
		c.DefaultService = "unknown"
	}
	return &Pipeline{c: c}
}

// Process builds the event for one record; ok is false when the record is
// dropped by the ONLY_JSON policy.
func (p *Pipeline) Process(tag string, t time.Time, rec record.Record, e *event.Event) (ok bool) {
	return p.ProcessWith(nil, tag, t, rec, e)
}

// Memo remembers the tags last derived from ECS fields (cluster and task
// from ARNs, service from a task definition): the records of one frame
// mostly come from one task. A Memo is used by one goroutine at a time;
// its zero value is ready.
type Memo struct {
	slots [3][2]string // memoCluster, memoTask, memoService: input, result
}

const (
	memoCluster = iota
	memoTask
	memoService
)

func (m *Memo) derive(k int, in string, f func(string) string) string {
	if m == nil {
		return f(in)
	}
	slot := &m.slots[k]
	if slot[0] != in || slot[1] == "" {
		slot[0], slot[1] = in, f(in)
	}
	return slot[1]
}

// ProcessWith is Process with a memo of derived tags (nil: none).
func (p *Pipeline) ProcessWith(m *Memo, tag string, t time.Time, rec record.Record, e *event.Event) (ok bool) {
	p.C.Records.Add(1)
	*e = event.Event{Time: t, Tag: tag}
	var fs fields
	fs.index(rec)
	line, fromLog := fs.line(rec)
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
		p.C.InvalidUTF8.Add(1)
	}
	for _, r := range p.c.Redact {
		if r.Pattern.MatchString(line) {
			line = r.Pattern.ReplaceAllString(line, r.Mask)
			p.C.Redacted.Add(1)
		}
	}
	if len(line) > p.c.MaxRecordBytes {
		cut := p.c.MaxRecordBytes
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		line = line[:cut]
		e.Flags |= event.FlagTruncated
		p.C.Truncated.Add(1)
	}
	e.Log = line

	var levels [len(levelKeys)][]byte
	if trimmed := strings.TrimSpace(line); len(trimmed) > 1 && trimmed[0] == '{' && e.Flags&event.FlagTruncated == 0 {
		// A read-only view of the line: Attrs aliases it (strings are
		// immutable, and nothing writes to Attrs).
		// One pass validates the line (as json.Valid would) and finds the
		// level keys' values.
		b := unsafe.Slice(unsafe.StringData(trimmed), len(trimmed))
		if vals, ok := scanJSON(b); ok {
			e.Flags |= event.FlagJSON
			levels = vals
			if strings.IndexByte(trimmed, '\n') >= 0 || strings.IndexByte(trimmed, '\r') >= 0 {
				var c bytes.Buffer
				_ = json.Compact(&c, b)
				b = c.Bytes()
			}
			e.Attrs = b
		}
	}
	if e.Flags&event.FlagJSON == 0 && p.c.DropNonJSON && fromLog {
		p.C.DroppedNonJSON.Add(1)
		return false
	}

	e.Level = "unknown"
	for i := range levelKeys {
		if l := levelFromRaw(levels[i]); l != "" {
			e.Level = l
			break
		}
		if f := fs.at(rec, fLoglevel+i); f != nil {
			if l := levelFromAny(f.Value()); l != "" {
				e.Level = l
				break
			}
		}
	}

	e.Cluster = fs.str(rec, fCluster)
	if e.Cluster == "" {
		e.Cluster = m.derive(memoCluster, fs.str(rec, fECSCluster), lastSegment)
	}
	if e.Cluster == "" {
		e.Cluster = p.c.DefaultCluster
	}
	e.Service = fs.str(rec, fService)
	if e.Service == "" {
		e.Service = m.derive(memoService, fs.str(rec, fTaskDefinition), ServiceFromTaskDefinition)
	}
	if e.Service == "" {
		e.Service = p.c.DefaultService
	}
	e.Container = fs.str(rec, fContainer)
	if e.Container == "" {
		e.Container = strings.TrimPrefix(fs.str(rec, fContainerName), "/")
	}
	e.Task = fs.str(rec, fTask)
	if e.Task == "" {
		e.Task = m.derive(memoTask, fs.str(rec, fTaskARN), lastSegment)
	}
	e.Source = fs.str(rec, fSource)
	e.RunID = fs.str(rec, fRunID)
	if e.RunID == "" {
		e.RunID = fs.str(rec, fRunIDUpper)
	}
	return true
}

// The record fields the pipeline reads.
const (
	fLog = iota
	fMessage
	fMsg
	fLoglevel // in the order of levelKeys
	fLevel
	fSeverity
	fCluster
	fECSCluster
	fService
	fTaskDefinition
	fContainer
	fContainerName
	fTask
	fTaskARN
	fSource
	fRunID
	fRunIDUpper
	nFields
)

// fieldNames are the keys of the fields, by index.
var fieldNames = [nFields]string{
	fLog: "log", fMessage: "message", fMsg: "msg", fLoglevel: "loglevel", fLevel: "level", fSeverity: "severity",
	fCluster: "cluster", fECSCluster: "ecs_cluster", fService: "service", fTaskDefinition: "ecs_task_definition",
	fContainer: "container", fContainerName: "container_name", fTask: "task", fTaskARN: "ecs_task_arn",
	fSource: "source", fRunID: "taskyard_run_id", fRunIDUpper: "TASKYARD_RUN_ID",
}

// fields indexes, in one pass over a record, the fields the pipeline
// reads: pos[k]-1 is the index of field k (the last one when repeated, as
// record.Get), or -1 when absent.
type fields struct{ pos [nFields]int32 }

func (fs *fields) index(rec record.Record) {
	for i := range rec {
		k := -1
		switch rec[i].Key {
		case "log":
			k = fLog
		case "message":
			k = fMessage
		case "msg":
			k = fMsg
		case "loglevel":
			k = fLoglevel
		case "level":
			k = fLevel
		case "severity":
			k = fSeverity
		case "cluster":
			k = fCluster
		case "ecs_cluster":
			k = fECSCluster
		case "service":
			k = fService
		case "ecs_task_definition":
			k = fTaskDefinition
		case "container":
			k = fContainer
		case "container_name":
			k = fContainerName
		case "task":
			k = fTask
		case "ecs_task_arn":
			k = fTaskARN
		case "source":
			k = fSource
		case "taskyard_run_id":
			k = fRunID
		case "TASKYARD_RUN_ID":
			k = fRunIDUpper
		}
		if k >= 0 {
			fs.pos[k] = int32(i) + 1
		}
	}
}

// at returns field k of rec, nil when absent.
func (fs *fields) at(rec record.Record, k int) *record.Field {
	if p := fs.pos[k]; p > 0 {
		return &rec[p-1]
	}
	return nil
}

// str returns field k as record.Record.String does.
func (fs *fields) str(rec record.Record, k int) string {
	if f := fs.at(rec, k); f != nil {
		return f.String()
	}
	return ""
}

// line finds the log line: `log` (FireLens, Docker), else `message` or
// `msg`, else the whole record as JSON. fromLog is false for the last.
func (fs *fields) line(rec record.Record) (string, bool) {
	for _, k := range [...]int{fLog, fMessage, fMsg} {
		if f := fs.at(rec, k); f != nil && f.IsStr {
			return strings.TrimRight(f.Str, "\n"), true
		}
	}
	b, err := json.Marshal(rec.Map())
	if err != nil {
		return "", false
	}
	return string(b), false
}

// ServiceFromTaskDefinition maps an ECS task definition ("family:revision"
// or its ARN) to a service name: the schedule of a taskyard family
// (v1.JobFamily, "taskyard-job-<schedule>"), otherwise the family itself.
func ServiceFromTaskDefinition(td string) string {
	if td == "" {
		return ""
	}
	td = lastSegment(td)
	if i := strings.LastIndexByte(td, ':'); i > 0 {
		td = td[:i]
	}
	if s, ok := v1.ScheduleFromJobFamily(td); ok {
		return s
	}
	return td
}

// lastSegment takes the name out of an ARN (".../name").
func lastSegment(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func levelFromAny(v any) string {
	switch x := v.(type) {
	case string:
		return NormalizeLevel(x)
	case float64:
		return numericLevel(int64(x))
	case int64:
		return numericLevel(x)
	}
	return ""
}

// NormalizeLevel maps a level name to debug, info, warn, error or fatal
// ("" when unrecognised).
func NormalizeLevel(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace", "debug", "dbug", "verbose", "d", "t":
		return "debug"
	case "info", "information", "informational", "notice", "i", "n":
		return "info"
	case "warn", "warning", "w":
		return "warn"
	case "error", "err", "e":
		return "error"
	case "fatal", "critical", "crit", "panic", "emerg", "emergency", "alert", "f", "c":
		return "fatal"
	}
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
		return numericLevel(int64(n))
	}
	return ""
}

// numericLevel reads bunyan/pino levels (10 trace … 60 fatal).
func numericLevel(n int64) string {
	switch {
	case n >= 60:
		return "fatal"
	case n >= 50:
		return "error"
	case n >= 40:
		return "warn"
	case n >= 30:
		return "info"
	case n >= 10:
		return "debug"
	}
	return ""
}

// DatadogStatus maps a normalized level to Datadog's status attribute.
func DatadogStatus(level string) string {
	switch level {
	case "debug":
		return "debug"
	case "warn":
		return "warning"
	case "error":
		return "error"
	case "fatal":
		return "critical"
	}
	return "info"
}

// LevelRank orders levels for minimum-level filters (unknown ranks as info).
func LevelRank(level string) int {
	switch level {
	case "debug":
		return 0
	case "warn":
		return 2
	case "error":
		return 3
	case "fatal":
		return 4
	}
	return 1
}
