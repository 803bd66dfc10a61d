package schedule

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	taskyardv1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestScheduleProtoRoundTrip(t *testing.T) {
	t.Parallel()
	for _, file := range []string{
		"testdata/good/schedules/nightly-report.yml",
		"testdata/good/schedules/minimal.yaml",
		"testdata/good/schedules/manual.yml",
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			s, err := LoadSchedule(file)
			require.NoError(t, err)
			spec := s.ToProto()
			require.Equal(t, file, spec.GetSourceFile())

			// Through the wire and back.
			wire, err := proto.Marshal(spec)
			require.NoError(t, err)
			var decoded taskyardv1.ScheduleSpec
			require.NoError(t, proto.Unmarshal(wire, &decoded))
			back, err := ScheduleFromProto(&decoded)
			require.NoError(t, err)

			require.True(t, proto.Equal(spec, back.ToProto()), "spec survives a round trip")
			wantExpr, gotExpr := s.Timing.Expression, back.Timing.Expression
			s.Timing.Expression, back.Timing.Expression, s.pos = nil, nil, nil
			require.Equal(t, s, back)
			if wantExpr == nil {
				require.Nil(t, gotExpr)
				return
			}
			require.Equal(t, wantExpr.String(), gotExpr.String())
			from := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
			require.Equal(t, fires(wantExpr, from, 5), fires(gotExpr, from, 5))
		})
	}
}

func TestScheduleFromProtoAnchorAndDefaults(t *testing.T) {
	t.Parallel()
	anchor := time.Date(2026, 1, 1, 0, 0, 7, 0, time.UTC)
	spec := &taskyardv1.ScheduleSpec{
		Name:       "a",
		Cluster:    "b",
		Containers: []*taskyardv1.Container{{Name: "app", Image: "busybox", Memory: 64, Essential: true}},
		Timing:     &taskyardv1.Timing{Expression: "rate(1 minute)", Enabled: true},
		Anchor:     timestamppb.New(anchor),
	}
	s, err := ScheduleFromProto(spec)
	require.NoError(t, err)
	require.Equal(t, anchor, s.Timing.Anchor)
	require.Equal(t, anchor.Add(time.Minute), s.Timing.Expression.Next(anchor))
	require.Equal(t, DefaultTaskCount, s.Timing.TaskCount)
	require.Equal(t, ConcurrencyForbid, s.Timing.Concurrency)
	require.Equal(t, DefaultStartingDeadline, s.Timing.StartingDeadline)
	require.Equal(t, CatchUp{Mode: CatchUpLatest, Max: 1}, s.Timing.CatchUp)
	require.Equal(t, TypeScheduled, s.Type)
	require.Equal(t, SeverityCritical, s.Alerts.Severity)
	require.True(t, proto.Equal(spec.GetAnchor(), s.ToProto().GetAnchor()))
}

func TestScheduleFromProtoProblems(t *testing.T) {
	t.Parallel()
	spec := &taskyardv1.ScheduleSpec{
		Name:       "bad name",
		Cluster:    "b",
		SourceFile: "nightly.yml",
		Containers: []*taskyardv1.Container{{Name: "app", Image: "busybox", Cpu: -5, Memory: 64, Essential: true}},
		Timing: &taskyardv1.Timing{
			Expression:       "cron(0 3 ? * 8 *)",
			Timezone:         "Mars/Olympus",
			StartingDeadline: durationpb.New(-time.Second),
			CatchUp:          &taskyardv1.CatchUp{Mode: "sometimes"},
		},
	}
	_, err := ScheduleFromProto(spec)
	require.EqualError(t, err, `nightly.yml: name: "bad name" must start with a letter or digit and contain only letters, digits, '_' and '-'
nightly.yml: containers[0].cpu: -5 must be at least 0
nightly.yml: schedule.timezone: unknown time zone "Mars/Olympus" (want an IANA name such as Asia/Tokyo or UTC)
nightly.yml: schedule.expression: cron day-of-week: "8" out of range 1-7
nightly.yml: schedule.startingDeadline: "-1s" must be positive
nightly.yml: schedule.catchUp.mode: "sometimes" is not one of none, latest, all`)
}

func TestProfileProtoRoundTrip(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"testdata/good/clusters/batch.yml", "testdata/good/clusters/spot.yml", "testdata/good/clusters/ec2.yml"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			p, err := LoadProfile(file)
			require.NoError(t, err)
			msg := p.ToProto()
			back, err := ProfileFromProto(msg)
			require.NoError(t, err)
			require.True(t, proto.Equal(msg, back.ToProto()))
			p.pos, p.File = nil, ""
			require.Equal(t, p, back)
		})
	}
	_, err := ProfileFromProto(&taskyardv1.ClusterProfile{Name: "p", Cluster: "c", LaunchType: "FARGATE", NetworkMode: "bridge"})
	require.EqualError(t, err, "networkMode: Fargate requires awsvpc")
}
