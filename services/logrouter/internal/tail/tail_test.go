package tail

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/logrouter/internal/event"
)

func TestTailFiltersAndExpires(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	got := map[string][]string{}
	r := New(func() time.Time { return now }, func(subject string, data []byte) error {
		var l v1.TailLine
		require.NoError(t, proto.Unmarshal(data, &l))
		mu.Lock()
		got[subject] = append(got[subject], l.Log)
		mu.Unlock()
		return nil
	})
	require.False(t, r.Active())
	r.Add(&v1.TailRequest{Inbox: "a", Cluster: "prod|stage", Level: "error", TtlSeconds: 30})
	r.Add(&v1.TailRequest{Inbox: "b", Service: "etl*", TtlSeconds: 60})
	require.True(t, r.Active())
	evs := []event.Event{
		{Cluster: "prod", Service: "etl", Level: "error", Log: "1"},
		{Cluster: "stage", Service: "web", Level: "info", Log: "2"},
		{Cluster: "dev", Service: "etl-daily", Level: "debug", Log: "3"},
		{Cluster: "stage", Service: "web", Level: "fatal", Log: "4"},
	}
	r.Offer(evs)
	require.Equal(t, []string{"1", "4"}, got["a"])
	require.Equal(t, []string{"1", "3"}, got["b"])

	now = now.Add(45 * time.Second) // a lapsed, b still live
	r.Offer(evs)
	require.Equal(t, []string{"1", "4"}, got["a"])
	require.Len(t, got["b"], 4)
	now = now.Add(time.Minute)
	r.Offer(evs)
	require.False(t, r.Active(), "every tail lapsed: nothing to do on the hot path")
}
