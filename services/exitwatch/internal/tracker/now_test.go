package tracker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// While the consumer works through a backlog the rules judge by the newest
// event time seen on the bus; once caught up, by the wall clock.
func TestNowFollowsBusTimeWhileLagging(t *testing.T) {
	t.Parallel()
	wall := time.Date(2026, 11, 21, 3, 10, 0, 0, time.UTC)
	tr, err := New(Config{}, Deps{Now: func() time.Time { return wall }, Meter: noop.NewMeterProvider().Meter("t")})
	require.NoError(t, err)
	require.Equal(t, wall, tr.Now())
	bus := wall.Add(-7 * time.Minute)
	tr.seen(timestamppb.New(bus))
	tr.seen(timestamppb.New(bus.Add(-time.Minute))) // older events do not move it back
	require.Equal(t, wall, tr.Now(), "caught up: wall clock")
	tr.pending.Store(5000)
	require.Equal(t, bus, tr.Now(), "lagging: bus time")
	tr.seen(timestamppb.New(wall.Add(time.Minute)))
	require.Equal(t, wall, tr.Now(), "bus time is never ahead of the wall clock")
	tr.pending.Store(0)
	require.Equal(t, wall, tr.Now())
}
