// Package ping is exitwatch's Healthchecks.io-compatible ping API for jobs
// that run outside taskyard. Checks are defined in a YAML file (an expected
// period, or a cron expression with a time zone, plus grace); pings become
// the same run events the scheduler publishes (RunDispatched and
// TaskStateChanged with the exit status), so the run tracker gives them
// the same verdicts, rules and alerts as scheduled runs.
package ping

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/watchlist"
	"github.com/taskyard/taskyard/services/kit/schedule"
)

// DefaultGrace is a check's grace when the file gives none.
const DefaultGrace = 10 * time.Minute

// DefaultCluster labels ping runs that name no cluster.
const DefaultCluster = "ping"

// File is a parsed checks file.
type File struct {
	// PingKey, when set, must be the first path element of every ping URL
	// (/ping/<key>/<check>).
	PingKey string
	Checks  []*watchlist.Item
}

type checkYAML struct {
	Name          string        `yaml:"name"`
	Period        time.Duration `yaml:"period"`
	Schedule      string        `yaml:"schedule"`
	Timezone      string        `yaml:"timezone"`
	Grace         time.Duration `yaml:"grace"`
	Timeout       time.Duration `yaml:"timeout"`
	Cluster       string        `yaml:"cluster"`
	Runbook       string        `yaml:"runbook"`
	Severity      string        `yaml:"severity"`
	Channel       string        `yaml:"channel"`
	SucceedWithin time.Duration `yaml:"succeedWithin"`
	Enabled       *bool         `yaml:"enabled"`
}

type fileYAML struct {
	PingKey string      `yaml:"pingKey"`
	Checks  []checkYAML `yaml:"checks"`
}

// Load reads a checks file.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read checks file: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a checks file, reporting every problem with file, line and
// field.
func Parse(file string, data []byte) (*File, error) {
	var raw fileYAML
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	lines := map[int]int{}
	if len(root.Content) > 0 {
		top := root.Content[0]
		for i := 0; i+1 < len(top.Content); i += 2 {
			if top.Content[i].Value == "checks" {
				for j, n := range top.Content[i+1].Content {
					lines[j] = n.Line
				}
			}
		}
	}
	out := &File{PingKey: raw.PingKey}
	var probs []string
	seen := map[string]bool{}
	for i, c := range raw.Checks {
		at := fmt.Sprintf("%s:%d: checks[%d]", file, lines[i], i)
		bad := func(field, format string, args ...any) {
			probs = append(probs, at+"."+field+": "+fmt.Sprintf(format, args...))
		}
		if err := v1.CheckName(c.Name); err != nil {
			bad("name", "%v", err)
		} else if seen[c.Name] {
			bad("name", "%q is defined twice", c.Name)
		}
		seen[c.Name] = true
		it := &watchlist.Item{
			Kind: watchlist.KindCheck, Name: c.Name, Cluster: c.Cluster, Enabled: c.Enabled == nil || *c.Enabled,
			Period: c.Period, Grace: c.Grace, Timeout: c.Timeout, TaskCount: 1, Concurrency: "allow",
			Runbook: c.Runbook, Channel: c.Channel, Severity: v1.Severity_SEVERITY_CRITICAL,
			SucceedWithin: c.SucceedWithin,
		}
		if it.Cluster == "" {
			it.Cluster = DefaultCluster
		} else if err := v1.CheckName(it.Cluster); err != nil {
			bad("cluster", "%v", err)
		}
		if it.Grace == 0 {
			it.Grace = DefaultGrace
		}
		if it.Grace < 0 {
			bad("grace", "must not be negative")
		}
		switch {
		case c.Period > 0 && c.Schedule != "":
			bad("period", "give period or schedule, not both")
		case c.Period < 0:
			bad("period", "must be positive")
		case c.Period == 0 && c.Schedule == "":
			bad("period", "give period (e.g. 24h) or schedule (a cron expression)")
		case c.Schedule != "":
			loc := time.UTC
			if c.Timezone != "" {
				l, err := time.LoadLocation(c.Timezone)
				if err != nil {
					bad("timezone", "unknown time zone %q", c.Timezone)
				} else {
					loc = l
				}
			}
			expr, err := schedule.ParseExpr(c.Schedule, loc, time.Time{})
			if err != nil {
				bad("schedule", "%v", err)
			} else if expr.Kind() == schedule.KindAt {
				bad("schedule", "at(...) fires once; a check needs a recurring schedule")
			} else {
				it.Expr = expr
			}
		}
		if c.Timezone != "" && c.Schedule == "" {
			bad("timezone", "only used with schedule")
		}
		if c.Severity != "" {
			sev, err := v1.ParseSeverity(c.Severity)
			if err != nil {
				bad("severity", "%v", err)
			}
			it.Severity = sev
		}
		if c.Runbook != "" && !strings.HasPrefix(c.Runbook, "http://") && !strings.HasPrefix(c.Runbook, "https://") {
			bad("runbook", "%q must be an http(s) URL", c.Runbook)
		}
		out.Checks = append(out.Checks, it)
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(probs, "\n"))
	}
	return out, nil
}
