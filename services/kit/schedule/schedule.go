package schedule

import (
	"fmt"
	"math"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Type says what fires a schedule.
type Type string

// Schedule types.
const (
	// TypeScheduled fires on its expression (and can be run by hand).
	TypeScheduled Type = "scheduled"
	// TypeManual only fires through `taskyard run`.
	TypeManual Type = "manual"
)

// Concurrency is what happens when a fire is due while runs of the same
// schedule are still going.
type Concurrency string

// Concurrency policies.
const (
	ConcurrencyAllow   Concurrency = "allow"   // start another run
	ConcurrencyForbid  Concurrency = "forbid"  // skip the fire
	ConcurrencyReplace Concurrency = "replace" // stop the running tasks, then start
)

// CatchUpMode is what a new leader does with fires missed while nobody led.
type CatchUpMode string

// Catch-up modes.
const (
	CatchUpNone   CatchUpMode = "none"   // drop missed fires
	CatchUpLatest CatchUpMode = "latest" // run the most recent missed fire
	CatchUpAll    CatchUpMode = "all"    // run every missed fire, up to Max
)

// Severity is an alert severity.
type Severity string

// Alert severities.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Defaults applied to absent fields.
const (
	DefaultTaskCount        = 1
	DefaultStartingDeadline = 5 * time.Minute
	DefaultCatchUpMax       = 10
	MaxTaskCount            = 1000
)

// Schedule is a validated schedule file with every default applied.
type Schedule struct {
	// File is the file the schedule was read from ("" when it was not).
	File    string
	Name    string
	Cluster string // name of a cluster Profile
	Type    Type
	// CPU and Memory are the explicit task size (CPU units, MiB); 0 means
	// "derive from the containers" (see TaskSize).
	CPU          int
	Memory       int
	Containers   []Container
	Timing       Timing
	Alerts       Alerts
	Expectations Expectations

	pos map[string]position // where each field was, for later checks
}

// Container is one container of the task.
type Container struct {
	Name              string
	Image             string
	CPU               int // CPU units, 0 = no reservation
	Memory            int // hard limit MiB, 0 = unset
	MemoryReservation int // soft limit MiB, 0 = unset
	Command           []string
	EntryPoint        []string
	Environment       map[string]string
	Secrets           map[string]string // name -> valueFrom (SSM parameter / Secrets Manager ARN)
	Essential         bool
}

// Timing is the `schedule:` block: when and how the schedule fires.
type Timing struct {
	// Expression is nil for manual schedules.
	Expression Expr
	// Timezone is the IANA zone name; Location is the loaded zone.
	Timezone string
	Location *time.Location
	// Anchor is the origin of rate() expressions (zero: the Unix epoch).
	Anchor           time.Time
	TaskCount        int
	Concurrency      Concurrency
	StartingDeadline time.Duration
	CatchUp          CatchUp
	Timeout          time.Duration // 0 = none
	Enabled          bool
}

// CatchUp says which missed fires are run. Max is the most missed fires run
// at once: 0 for none, 1 for latest, the configured cap for all.
type CatchUp struct {
	Mode CatchUpMode
	Max  int
}

// Alerts is where a schedule's alerts go.
type Alerts struct {
	Runbook  string
	Severity Severity
	Channel  string
}

// Expectations are what must happen for the schedule to be healthy.
type Expectations struct {
	// SucceedWithin: a run must succeed at least this often (0 = no check).
	SucceedWithin time.Duration
	// Logs: every run must log at least one record.
	Logs bool
}

// CPUSum returns the containers' total CPU units.
func (s *Schedule) CPUSum() int {
	n := 0
	for _, c := range s.Containers {
		n += c.CPU
	}
	return n
}

// MemorySum returns the containers' total memory in MiB, counting each
// container's hard limit, or its reservation when it has no hard limit.
func (s *Schedule) MemorySum() int {
	n := 0
	for _, c := range s.Containers {
		if c.Memory > 0 {
			n += c.Memory
		} else {
			n += c.MemoryReservation
		}
	}
	return n
}

// LoadSchedule reads and parses a schedule file. Errors are Problems.
func LoadSchedule(path string) (*Schedule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{readProblem(path, err)}
	}
	return ParseSchedule(path, data)
}

// ParseSchedule parses a schedule file's content; file names it in
// problems. The error, if any, is a Problems listing everything wrong.
func ParseSchedule(file string, data []byte) (*Schedule, error) {
	s, probs := parseSchedule(file, data)
	if len(probs) > 0 {
		return nil, probs
	}
	return s, nil
}

// parseSchedule returns what it could decode even when there are problems,
// so that cross-file checks can still use the name and cluster.
func parseSchedule(file string, data []byte) (*Schedule, Problems) {
	root, probs := parseDocument(file, data)
	if root == nil {
		return nil, probs
	}
	d := newDecoder(file)
	s := d.schedule(root)
	d.probs.sort()
	return s, d.probs
}

// decodeSchedule decodes an already parsed document (see ScheduleFromProto).
func decodeSchedule(file string, root *yaml.Node, anchor time.Time) (*Schedule, Problems) {
	d := newDecoder(file)
	d.anchor = anchor
	s := d.schedule(root)
	d.probs.sort()
	return s, d.probs
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkEnvName(k string) string {
	if !envNameRE.MatchString(k) {
		return fmt.Sprintf("%q is not a valid variable name (letters, digits and '_', not starting with a digit)", k)
	}
	return ""
}

func (d *decoder) schedule(n *yaml.Node) *Schedule {
	s := &Schedule{
		File: d.file,
		Type: TypeScheduled,
		Timing: Timing{
			Timezone:         "UTC",
			Location:         time.UTC,
			TaskCount:        DefaultTaskCount,
			Concurrency:      ConcurrencyForbid,
			StartingDeadline: DefaultStartingDeadline,
			CatchUp:          CatchUp{Mode: CatchUpLatest, Max: 1},
			Enabled:          true,
			Anchor:           d.anchor,
		},
		Alerts: Alerts{Severity: SeverityCritical},
		pos:    d.pos,
	}
	f := d.mapping(n, "", "name", "cluster", "type", "cpu", "memory", "containers", "schedule", "alerts", "expectations")
	if f == nil {
		return s
	}
	if v := d.required(f, "name", ""); v != nil {
		s.Name, _ = d.name(v, "name")
	}
	if v := d.required(f, "cluster", "(the name of a cluster profile)"); v != nil {
		s.Cluster, _ = d.name(v, "cluster")
	}
	if v := f.get("type"); v != nil {
		if t, ok := d.enum(v, "type", string(TypeScheduled), string(TypeManual)); ok {
			s.Type = Type(t)
		}
	}
	if v := f.get("cpu"); v != nil {
		s.CPU, _ = d.integer(v, "cpu", 1, math.MaxInt32)
	}
	if v := f.get("memory"); v != nil {
		s.Memory, _ = d.integer(v, "memory", 1, math.MaxInt32)
	}
	if v := d.required(f, "containers", "(at least one)"); v != nil {
		d.containers(v, s)
	}
	d.timing(f, s)
	if v := f.get("alerts"); v != nil {
		d.alerts(v, s)
	}
	if v := f.get("expectations"); v != nil {
		if ef := d.mapping(v, "expectations", "succeedWithin", "logs"); ef != nil {
			if v := ef.get("succeedWithin"); v != nil {
				s.Expectations.SucceedWithin, _ = d.duration(v, "expectations.succeedWithin")
			}
			if v := ef.get("logs"); v != nil {
				s.Expectations.Logs, _ = d.boolean(v, "expectations.logs")
			}
		}
	}
	return s
}

func (d *decoder) containers(n *yaml.Node, s *Schedule) {
	items := d.sequence(n, "containers")
	if items == nil {
		if resolve(n).Kind == yaml.SequenceNode {
			d.addf(n, "containers", "at least one container is required")
		}
		return
	}
	names := map[string]string{}
	essential := false
	var unsized []*fields // containers with neither memory nor memoryReservation
	for i, item := range items {
		path := fmt.Sprintf("containers[%d]", i)
		c := Container{Essential: true}
		f := d.mapping(item, path, "name", "image", "cpu", "memory", "memoryReservation", "command", "entryPoint", "environment", "secrets", "essential")
		if f == nil {
			continue
		}
		if v := d.required(f, "name", ""); v != nil {
			if name, ok := d.name(v, path+".name"); ok {
				if prev, dup := names[name]; dup {
					d.addf(v, path+".name", "duplicate container name %q (also %s)", name, prev)
				}
				names[name] = path
				c.Name = name
			}
		}
		if v := d.required(f, "image", ""); v != nil {
			c.Image, _ = d.nonEmpty(v, path+".image")
		}
		if v := f.get("cpu"); v != nil {
			c.CPU, _ = d.integer(v, path+".cpu", 0, math.MaxInt32)
		}
		if v := f.get("memory"); v != nil {
			c.Memory, _ = d.integer(v, path+".memory", 1, math.MaxInt32)
		}
		if v := f.get("memoryReservation"); v != nil {
			c.MemoryReservation, _ = d.integer(v, path+".memoryReservation", 1, math.MaxInt32)
			if c.Memory > 0 && c.MemoryReservation > c.Memory {
				d.addf(v, path+".memoryReservation", "%d MiB exceeds memory %d MiB", c.MemoryReservation, c.Memory)
			}
		}
		if f.get("memory") == nil && f.get("memoryReservation") == nil {
			unsized = append(unsized, f)
		}
		if v := f.get("command"); v != nil {
			c.Command, _ = d.strList(v, path+".command")
		}
		if v := f.get("entryPoint"); v != nil {
			c.EntryPoint, _ = d.strList(v, path+".entryPoint")
		}
		if v := f.get("environment"); v != nil {
			c.Environment, _ = d.strMap(v, path+".environment", checkEnvName, "")
		}
		if v := f.get("secrets"); v != nil {
			c.Secrets, _ = d.strMap(v, path+".secrets", checkEnvName, "must name an SSM parameter or Secrets Manager secret")
			sv := resolve(v)
			for j := 0; sv.Kind == yaml.MappingNode && j+1 < len(sv.Content); j += 2 {
				k := resolve(sv.Content[j])
				if _, both := c.Environment[k.Value]; both {
					d.addf(k, path+".secrets."+k.Value, "also set in environment")
				}
			}
		}
		if v := f.get("essential"); v != nil {
			if b, ok := d.boolean(v, path+".essential"); ok {
				c.Essential = b
			}
		}
		essential = essential || c.Essential
		s.Containers = append(s.Containers, c)
	}
	if len(items) == 0 {
		d.addf(n, "containers", "at least one container is required")
		return
	}
	if !essential && len(s.Containers) == len(items) {
		d.addf(n, "containers", "at least one container must be essential")
	}
	if s.Memory == 0 {
		for _, f := range unsized {
			d.addf(f.node, f.path+".memory", "required (set memory or memoryReservation, or the task-level memory)")
		}
	}
	if s.CPU > 0 && s.CPUSum() > s.CPU {
		d.addAt("cpu", "the containers' CPU units add up to %d, more than the task's %d", s.CPUSum(), s.CPU)
	}
	if s.Memory > 0 {
		hard := 0
		for _, c := range s.Containers {
			hard += max(c.Memory, c.MemoryReservation)
		}
		if hard > s.Memory {
			d.addAt("memory", "the containers' memory adds up to %d MiB, more than the task's %d MiB", hard, s.Memory)
		}
	}
}

func (d *decoder) timing(root *fields, s *Schedule) {
	t := &s.Timing
	v := root.get("schedule")
	if v == nil {
		if s.Type != TypeManual {
			d.addf(root.node, "schedule", "required (with an expression) unless type is manual")
		}
		return
	}
	f := d.mapping(v, "schedule", "expression", "timezone", "taskCount", "concurrency", "startingDeadline", "catchUp", "timeout", "enabled")
	if f == nil {
		return
	}
	zoneOK := true
	if v := f.get("timezone"); v != nil {
		if name, ok := d.nonEmpty(v, "schedule.timezone"); ok {
			loc, err := loadZone(name)
			if err != nil {
				d.addf(v, "schedule.timezone", "%v", err)
				zoneOK = false
			} else {
				t.Timezone, t.Location = name, loc
			}
		} else {
			zoneOK = false
		}
	}
	expr := f.get("expression")
	switch {
	case expr == nil && s.Type != TypeManual:
		d.required(f, "expression", "unless type is manual")
	case expr != nil && s.Type == TypeManual:
		d.addf(expr, "schedule.expression", "not allowed for type manual (manual schedules only fire through `taskyard run`)")
	case expr != nil:
		if text, ok := d.nonEmpty(expr, "schedule.expression"); ok {
			// With a bad zone, still parse (in UTC) to report syntax errors.
			e, err := ParseExpr(text, t.Location, t.Anchor)
			if err != nil {
				d.addf(expr, "schedule.expression", "%v", err)
			} else if zoneOK {
				t.Expression = e
			}
		}
	}
	if v := f.get("taskCount"); v != nil {
		t.TaskCount, _ = d.integer(v, "schedule.taskCount", 1, MaxTaskCount)
	}
	if v := f.get("concurrency"); v != nil {
		if c, ok := d.enum(v, "schedule.concurrency", string(ConcurrencyAllow), string(ConcurrencyForbid), string(ConcurrencyReplace)); ok {
			t.Concurrency = Concurrency(c)
		}
	}
	if v := f.get("startingDeadline"); v != nil {
		t.StartingDeadline, _ = d.duration(v, "schedule.startingDeadline")
	}
	if v := f.get("catchUp"); v != nil {
		d.catchUp(v, t)
	}
	if v := f.get("timeout"); v != nil {
		t.Timeout, _ = d.duration(v, "schedule.timeout")
	}
	if v := f.get("enabled"); v != nil {
		t.Enabled, _ = d.boolean(v, "schedule.enabled")
	}
}

var catchUpModes = []string{string(CatchUpNone), string(CatchUpLatest), string(CatchUpAll)}

func catchUpFor(mode CatchUpMode, max int) CatchUp {
	switch mode {
	case CatchUpNone:
		return CatchUp{Mode: mode}
	case CatchUpLatest:
		return CatchUp{Mode: mode, Max: 1}
	}
	return CatchUp{Mode: mode, Max: max}
}

// catchUp accepts a mode ("latest") or a mapping {mode: all, max: 10}.
func (d *decoder) catchUp(n *yaml.Node, t *Timing) {
	const path = "schedule.catchUp"
	if r := resolve(n); r.Kind == yaml.ScalarNode {
		if m, ok := d.enum(r, path, catchUpModes...); ok {
			t.CatchUp = catchUpFor(CatchUpMode(m), DefaultCatchUpMax)
		}
		return
	}
	f := d.mapping(n, path, "mode", "max")
	if f == nil {
		return
	}
	mode, ok := CatchUpMode(""), false
	if v := d.required(f, "mode", ""); v != nil {
		var m string
		m, ok = d.enum(v, path+".mode", catchUpModes...)
		mode = CatchUpMode(m)
	}
	maxRuns := DefaultCatchUpMax
	if v := f.get("max"); v != nil {
		if ok && mode != CatchUpAll {
			d.addf(v, path+".max", "only applies to mode all")
		} else {
			maxRuns, _ = d.integer(v, path+".max", 1, MaxTaskCount)
		}
	}
	if ok {
		t.CatchUp = catchUpFor(mode, maxRuns)
	}
}

func (d *decoder) alerts(n *yaml.Node, s *Schedule) {
	f := d.mapping(n, "alerts", "runbook", "severity", "channel")
	if f == nil {
		return
	}
	if v := f.get("runbook"); v != nil {
		if r, ok := d.nonEmpty(v, "alerts.runbook"); ok {
			if u, err := url.Parse(r); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				d.addf(v, "alerts.runbook", "%q is not an http(s) URL", r)
			} else {
				s.Alerts.Runbook = r
			}
		}
	}
	if v := f.get("severity"); v != nil {
		if sev, ok := d.enum(v, "alerts.severity", string(SeverityCritical), string(SeverityWarning), string(SeverityInfo)); ok {
			s.Alerts.Severity = Severity(sev)
		}
	}
	if v := f.get("channel"); v != nil {
		s.Alerts.Channel, _ = d.nonEmpty(v, "alerts.channel")
	}
}

// loadZone loads an IANA zone, refusing "Local", whose meaning depends on
// the machine.
func loadZone(name string) (*time.Location, error) {
	if name == "Local" || strings.TrimSpace(name) != name {
		return nil, fmt.Errorf("%q is not an IANA time zone name", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q (want an IANA name such as Asia/Tokyo or UTC)", name)
	}
	return loc, nil
}
