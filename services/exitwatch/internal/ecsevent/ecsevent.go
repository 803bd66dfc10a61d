// Package ecsevent turns Amazon ECS "ECS Task State Change" events, as
// EventBridge delivers them (envelope + detail), into taskyard's
// TaskStateChanged, and recognises tasks that taskyard started from their
// startedBy, group and environment overrides.
package ecsevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// DetailType is the EventBridge detail-type of task state changes.
const DetailType = "ECS Task State Change"

// StartedByPrefix prefixes startedBy ("taskyard:<schedule>") and group
// ("taskyard:<run id>") of the tasks the scheduler's ECS runner starts.
const StartedByPrefix = "taskyard:"

// RunIDEnv is the environment variable carrying the run id into the task.
const RunIDEnv = "TASKYARD_RUN_ID"

// ErrNotTaskEvent is returned for well-formed EventBridge events of another
// detail-type or source (the rule may be broader than needed).
var ErrNotTaskEvent = errors.New("not an ECS Task State Change event")

// Envelope is the EventBridge event envelope.
type Envelope struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       string          `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// Detail is the `detail` of an ECS Task State Change event (the fields
// exitwatch uses; unknown fields are ignored as AWS asks).
type Detail struct {
	ClusterArn           string      `json:"clusterArn"`
	TaskArn              string      `json:"taskArn"`
	TaskDefinitionArn    string      `json:"taskDefinitionArn"`
	LastStatus           string      `json:"lastStatus"`
	DesiredStatus        string      `json:"desiredStatus"`
	StopCode             string      `json:"stopCode"`
	StoppedReason        string      `json:"stoppedReason"`
	StartedBy            string      `json:"startedBy"`
	Group                string      `json:"group"`
	LaunchType           string      `json:"launchType"`
	CapacityProviderName string      `json:"capacityProviderName"`
	Containers           []Container `json:"containers"`
	CreatedAt            string      `json:"createdAt"`
	PullStartedAt        string      `json:"pullStartedAt"`
	StartedAt            string      `json:"startedAt"`
	StoppingAt           string      `json:"stoppingAt"`
	StoppedAt            string      `json:"stoppedAt"`
	Version              *int64      `json:"version"`
	Overrides            struct {
		ContainerOverrides []struct {
			Name        string `json:"name"`
			Environment []struct {
				Name  string `json:"name"`
				Value string `json:"value"`
			} `json:"environment"`
		} `json:"containerOverrides"`
	} `json:"overrides"`
}

// Container is one entry of detail.containers.
type Container struct {
	Name       string `json:"name"`
	Image      string `json:"image"`
	LastStatus string `json:"lastStatus"`
	ExitCode   *int32 `json:"exitCode"`
	Reason     string `json:"reason"`
}

// Parse decodes one EventBridge event. It returns ErrNotTaskEvent (wrapped)
// for other detail-types, and an error naming the field for malformed ones.
func Parse(data []byte) (*v1.TaskStateChanged, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("eventbridge event: %w", err)
	}
	if env.DetailType != DetailType || (env.Source != "" && env.Source != "aws.ecs") {
		return nil, fmt.Errorf("%w: source %q detail-type %q", ErrNotTaskEvent, env.Source, env.DetailType)
	}
	if len(env.Detail) == 0 {
		return nil, fmt.Errorf("eventbridge event %s: field detail is missing", env.ID)
	}
	var d Detail
	if err := json.Unmarshal(env.Detail, &d); err != nil {
		return nil, fmt.Errorf("eventbridge event %s: field detail: %w", env.ID, err)
	}
	t, err := FromDetail(&d)
	if err != nil {
		return nil, fmt.Errorf("eventbridge event %s: %w", env.ID, err)
	}
	if env.Time != "" {
		et, err := parseTime(env.Time)
		if err != nil {
			return nil, fmt.Errorf("eventbridge event %s: field time: %w", env.ID, err)
		}
		t.EventTime = et
	}
	t.Source = "sqs"
	return t, nil
}

// FromDetail converts a decoded detail.
func FromDetail(d *Detail) (*v1.TaskStateChanged, error) {
	if d.TaskArn == "" {
		return nil, errors.New("field detail.taskArn is missing")
	}
	if d.LastStatus == "" {
		return nil, errors.New("field detail.lastStatus is missing")
	}
	if d.Version == nil {
		return nil, errors.New("field detail.version is missing")
	}
	t := &v1.TaskStateChanged{
		TaskArn:              d.TaskArn,
		ClusterArn:           d.ClusterArn,
		LastStatus:           d.LastStatus,
		DesiredStatus:        d.DesiredStatus,
		StopCode:             d.StopCode,
		StoppedReason:        d.StoppedReason,
		StartedBy:            d.StartedBy,
		Group:                d.Group,
		TaskDefinitionArn:    d.TaskDefinitionArn,
		Version:              *d.Version,
		LaunchType:           d.LaunchType,
		CapacityProviderName: d.CapacityProviderName,
	}
	for i, c := range d.Containers {
		cs := &v1.ContainerState{Name: c.Name, LastStatus: c.LastStatus, Reason: c.Reason, Image: c.Image, Essential: true}
		if c.ExitCode != nil {
			cs.ExitCode, cs.HasExitCode = *c.ExitCode, true
		}
		if c.Name == "" {
			return nil, fmt.Errorf("field detail.containers[%d].name is missing", i)
		}
		t.Containers = append(t.Containers, cs)
	}
	for _, f := range []struct {
		name string
		s    string
		dst  **timestamppb.Timestamp
	}{
		{"createdAt", d.CreatedAt, &t.CreatedAt},
		{"pullStartedAt", d.PullStartedAt, &t.PullStartedAt},
		{"startedAt", d.StartedAt, &t.StartedAt},
		{"stoppingAt", d.StoppingAt, &t.StoppingAt},
		{"stoppedAt", d.StoppedAt, &t.StoppedAt},
	} {
		if f.s == "" {
			continue
		}
		ts, err := parseTime(f.s)
		if err != nil {
			return nil, fmt.Errorf("field detail.%s: %w", f.name, err)
		}
		*f.dst = ts
	}
	var env map[string]string
	for _, o := range d.Overrides.ContainerOverrides {
		for _, e := range o.Environment {
			if e.Name == RunIDEnv {
				if env == nil {
					env = map[string]string{}
				}
				env[e.Name] = e.Value
			}
		}
	}
	t.Schedule, t.RunId = Identify(d.StartedBy, d.Group, env[RunIDEnv])
	return t, nil
}

// Identify returns the schedule and run id of a task taskyard started:
// startedBy "taskyard:<schedule>", group "taskyard:<run id>" or the
// TASKYARD_RUN_ID environment override. Both are empty for other tasks.
func Identify(startedBy, group, envRunID string) (schedule, runID string) {
	if s, ok := strings.CutPrefix(startedBy, StartedByPrefix); ok && v1.ValidName(s) {
		schedule = s
	}
	if r, ok := strings.CutPrefix(group, StartedByPrefix); ok && validRunID(r) {
		runID = r
	} else if validRunID(envRunID) {
		runID = envRunID
	}
	if schedule == "" {
		runID = "" // a run id without a taskyard startedBy is not ours
	}
	return schedule, runID
}

func validRunID(s string) bool {
	if s == "" || len(s) > v1.MaxRunIDLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// ClusterName returns the cluster name of an ECS cluster ARN
// (arn:aws:ecs:region:account:cluster/NAME), or s itself when it is not an
// ARN.
func ClusterName(s string) string {
	if i := strings.LastIndex(s, ":cluster/"); i >= 0 && strings.HasPrefix(s, "arn:") {
		return s[i+len(":cluster/"):]
	}
	return s
}

func parseTime(s string) (*timestamppb.Timestamp, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	return timestamppb.New(t), nil
}
