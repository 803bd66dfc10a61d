package specdiff

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

func base() *v1.ScheduleSpec {
	return &v1.ScheduleSpec{
		Name: "nightly", Cluster: "prod",
		Containers: []*v1.Container{{Name: "app", Image: "app:1", Command: []string{"run"}, Environment: map[string]string{"A": "1", "B": "2"}, Essential: true}},
		Timing:     &v1.Timing{Expression: "cron(0 3 * * ? *)", Timezone: "UTC", Enabled: true, StartingDeadline: durationpb.New(5 * time.Minute)},
		AppliedAt:  timestamppb.New(time.Unix(1, 0)),
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	require.Equal(t, []*v1.FieldChange{{Schedule: "nightly", Op: OpAdded}}, Diff(nil, base()))
	require.Equal(t, []*v1.FieldChange{{Schedule: "nightly", Op: OpRemoved}}, Diff(base(), nil))

	same := base()
	same.AppliedAt = timestamppb.Now()
	same.AppliedBy = "someone"
	require.Empty(t, Diff(base(), same), "bookkeeping fields are not changes")

	n := base()
	n.Timing.Expression = "cron(0 4 * * ? *)"
	n.Timing.StartingDeadline = durationpb.New(time.Minute)
	n.Containers[0].Image = "app:2"
	n.Containers[0].Environment["B"] = "3"
	delete(n.Containers[0].Environment, "A")
	n.Containers[0].Environment["C"] = "x"
	n.Containers[0].Command = append(n.Containers[0].Command, "--fast")
	n.Containers = append(n.Containers, &v1.Container{Name: "side", Image: "side:1"})
	n.Alerts = &v1.AlertSettings{Runbook: "https://runbooks/x"}
	got := Diff(base(), n)
	want := []*v1.FieldChange{
		{Schedule: "nightly", Op: OpChanged, Field: "containers[0].image", OldValue: "app:1", NewValue: "app:2"},
		{Schedule: "nightly", Op: OpAdded, Field: "containers[0].command[1]", NewValue: "--fast"},
		{Schedule: "nightly", Op: OpRemoved, Field: "containers[0].environment.A", OldValue: "1"},
		{Schedule: "nightly", Op: OpChanged, Field: "containers[0].environment.B", OldValue: "2", NewValue: "3"},
		{Schedule: "nightly", Op: OpAdded, Field: "containers[0].environment.C", NewValue: "x"},
		{Schedule: "nightly", Op: OpAdded, Field: "containers[1]", NewValue: `name:"side" image:"side:1"`},
		{Schedule: "nightly", Op: OpChanged, Field: "schedule.expression", OldValue: "cron(0 3 * * ? *)", NewValue: "cron(0 4 * * ? *)"},
		{Schedule: "nightly", Op: OpChanged, Field: "schedule.startingDeadline", OldValue: "5m0s", NewValue: "1m0s"},
		{Schedule: "nightly", Op: OpAdded, Field: "alerts.runbook", NewValue: "https://runbooks/x"},
	}
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		if w.Field == "containers[1]" {
			require.Equal(t, w.Field, g.Field)
			require.Equal(t, OpAdded, g.Op)
			require.Contains(t, g.NewValue, "side:1")
			continue
		}
		require.True(t, proto.Equal(w, g), "change %d: want %v got %v", i, w, g)
	}
	out := Format(got)
	require.Contains(t, out, "~ nightly schedule.expression: cron(0 3 * * ? *) -> cron(0 4 * * ? *)\n")
	require.Contains(t, out, "- nightly containers[0].environment.A: 1\n")
}
