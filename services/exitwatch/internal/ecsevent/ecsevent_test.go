package ecsevent_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/ecsevent"
)

func load(t *testing.T, name string) []json.RawMessage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../testdata/ecs-events", name))
	require.NoError(t, err)
	var evs []json.RawMessage
	require.NoError(t, json.Unmarshal(data, &evs))
	return evs
}

func TestParseFixtures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file  string
		index int
		check func(t *testing.T, ev *v1.TaskStateChanged)
	}{
		{"exit3-out-of-order.json", 4, func(t *testing.T, ev *v1.TaskStateChanged) {
			require.Equal(t, "STOPPED", ev.GetLastStatus())
			require.EqualValues(t, 5, ev.GetVersion())
			require.Equal(t, "nightly-report", ev.GetSchedule())
			require.Equal(t, "nightly-report-20261121T030000Z-s-9f2c4e1a7b3d5e60", ev.GetRunId())
			require.Equal(t, "EssentialContainerExited", ev.GetStopCode())
			require.Len(t, ev.GetContainers(), 1)
			require.True(t, ev.GetContainers()[0].GetHasExitCode())
			require.EqualValues(t, 3, ev.GetContainers()[0].GetExitCode())
			require.Equal(t, "2026-11-21T03:04:40.118Z", ev.GetStoppedAt().AsTime().Format("2006-01-02T15:04:05.000Z"))
			require.Equal(t, "2026-11-21T03:04:40Z", ev.GetEventTime().AsTime().Format("2006-01-02T15:04:05Z"))
			require.Equal(t, "sqs", ev.GetSource())
			require.Equal(t, "FARGATE", ev.GetLaunchType())
		}},
		{"exit3-out-of-order.json", 0, func(t *testing.T, ev *v1.TaskStateChanged) {
			require.Equal(t, "PROVISIONING", ev.GetLastStatus())
			require.False(t, ev.GetContainers()[0].GetHasExitCode())
			require.Nil(t, ev.GetStartedAt())
		}},
		{"oom-137.json", 1, func(t *testing.T, ev *v1.TaskStateChanged) {
			require.EqualValues(t, 137, ev.GetContainers()[0].GetExitCode())
			require.Contains(t, ev.GetContainers()[0].GetReason(), "OutOfMemoryError")
			require.EqualValues(t, 0, ev.GetContainers()[1].GetExitCode())
		}},
		{"cannot-pull.json", 1, func(t *testing.T, ev *v1.TaskStateChanged) {
			require.Equal(t, "TaskFailedToStart", ev.GetStopCode())
			require.False(t, ev.GetContainers()[0].GetHasExitCode())
			require.Contains(t, ev.GetContainers()[0].GetReason(), "CannotPullContainerError")
		}},
		{"spot-interruption.json", 0, func(t *testing.T, ev *v1.TaskStateChanged) {
			require.Equal(t, "SpotInterruption", ev.GetStopCode())
			require.Equal(t, "FARGATE_SPOT", ev.GetCapacityProviderName())
		}},
		{"unmanaged-exit1.json", 0, func(t *testing.T, ev *v1.TaskStateChanged) {
			require.Empty(t, ev.GetSchedule())
			require.Empty(t, ev.GetRunId())
			require.Equal(t, "ecs-cli/adhoc", ev.GetStartedBy())
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			ev, err := ecsevent.Parse(load(t, tt.file)[tt.index])
			require.NoError(t, err)
			tt.check(t, ev)
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"not json", `{`, "eventbridge event"},
		{"other type", `{"detail-type":"ECS Service Action","source":"aws.ecs","detail":{}}`, "not an ECS Task State Change"},
		{"no detail", `{"id":"e1","detail-type":"ECS Task State Change","source":"aws.ecs"}`, "field detail is missing"},
		{"no arn", `{"id":"e1","detail-type":"ECS Task State Change","source":"aws.ecs","detail":{"lastStatus":"RUNNING","version":1}}`, "detail.taskArn is missing"},
		{"no version", `{"id":"e1","detail-type":"ECS Task State Change","source":"aws.ecs","detail":{"taskArn":"a","lastStatus":"RUNNING"}}`, "detail.version is missing"},
		{"bad time", `{"id":"e1","detail-type":"ECS Task State Change","source":"aws.ecs","detail":{"taskArn":"a","lastStatus":"RUNNING","version":1,"startedAt":"yesterday"}}`, "detail.startedAt"},
		{"bad exit code", `{"id":"e1","detail-type":"ECS Task State Change","source":"aws.ecs","detail":{"taskArn":"a","lastStatus":"STOPPED","version":1,"containers":[{"name":"a","exitCode":"x"}]}}`, "field detail"},
		{"unnamed container", `{"id":"e1","detail-type":"ECS Task State Change","source":"aws.ecs","detail":{"taskArn":"a","lastStatus":"STOPPED","version":1,"containers":[{"exitCode":1}]}}`, "detail.containers[0].name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ecsevent.Parse([]byte(tt.in))
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestIdentify(t *testing.T) {
	t.Parallel()
	tests := []struct{ startedBy, group, env, sched, run string }{
		{"taskyard:nightly", "taskyard:nightly-20261121T030000Z-s-0011223344556677", "", "nightly", "nightly-20261121T030000Z-s-0011223344556677"},
		{"taskyard:nightly", "family:nightly", "nightly-x", "nightly", "nightly-x"},
		{"taskyard:nightly", "family:nightly", "", "nightly", ""},
		{"ecs-svc/123", "taskyard:r1", "r1", "", ""},
		{"taskyard:bad.name", "taskyard:r1", "", "", ""},
		{"taskyard:n", "taskyard:has space", "", "n", ""},
	}
	for _, tt := range tests {
		s, r := ecsevent.Identify(tt.startedBy, tt.group, tt.env)
		require.Equal(t, tt.sched, s, tt)
		require.Equal(t, tt.run, r, tt)
	}
	require.Equal(t, "batch", ecsevent.ClusterName("arn:aws:ecs:eu-west-1:123456789012:cluster/batch"))
	require.Equal(t, "batch", ecsevent.ClusterName("batch"))
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/ecs-events/*.json")
	for _, file := range files {
		data, _ := os.ReadFile(file)
		var evs []json.RawMessage
		_ = json.Unmarshal(data, &evs)
		for _, e := range evs {
			f.Add([]byte(e))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ecsevent.Parse(data)
		if err != nil {
			return
		}
		if ev.GetTaskArn() == "" || ev.GetLastStatus() == "" {
			t.Fatalf("parsed event without task arn or status: %v", ev)
		}
		if ev.GetRunId() != "" && ev.GetSchedule() == "" {
			t.Fatalf("run id without schedule: %v", ev)
		}
	})
}
