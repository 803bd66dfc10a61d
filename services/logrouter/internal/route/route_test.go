package route

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
)

func TestTable(t *testing.T) {
	t.Parallel()
	tb := &Table{NOutputs: 3, Routes: []Route{
		{Outputs: []int{0}},
		{Level: "warn|error|fatal", Outputs: []int{1}},
		{Cluster: "prod*", Service: "billing-*", Container: "app", Outputs: []int{2}},
	}}
	for _, tc := range []struct {
		e    event.Event
		want Set
	}{
		{event.Event{Cluster: "dev", Service: "x", Level: "info"}, 0b001},
		{event.Event{Cluster: "dev", Service: "x", Level: "error"}, 0b011},
		{event.Event{Cluster: "prod-eu", Service: "billing-api", Container: "app", Level: "fatal"}, 0b111},
		{event.Event{Cluster: "prod-eu", Service: "billing-api", Container: "sidecar", Level: "debug"}, 0b001},
	} {
		require.Equal(t, tc.want, tb.Match(&tc.e), "%v", tc.e)
	}
	require.Equal(t, Set(0b111), (&Table{NOutputs: 3}).Match(&event.Event{}), "no routes: every output")
	require.Equal(t, Set(0), (&Table{NOutputs: 2, Routes: []Route{{Service: "a", Outputs: []int{0}}}}).Match(&event.Event{Service: "b"}), "unrouted")
	require.True(t, Valid("a|b*|c?"))
	require.False(t, Valid("ok|["))
}
