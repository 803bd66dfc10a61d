package stats

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
)

// TestWindowAdd: counting runs of events that share cluster, service and
// level gives the same LogStats as counting every event on its own, over
// several Add calls and mixed runs.
func TestWindowAdd(t *testing.T) {
	t.Parallel()
	start := time.Unix(1700000000, 0)
	w := NewWindow(start)
	type k struct{ c, s string }
	records, bytes := map[k]int64{}, map[k]int64{}
	levels, runs := map[k]map[string]int64{}, map[k]map[string]int64{}
	clusters, services := []string{"prod", "dev"}, []string{"etl", "web", "api"}
	lvls := []string{"info", "info", "error", "debug"}
	for batch := 0; batch < 5; batch++ {
		var evs []event.Event
		for i := 0; i < 97; i++ {
			n := batch*97 + i
			e := event.Event{Cluster: clusters[n/7%2], Service: services[n/3%3], Level: lvls[n/2%4], Log: fmt.Sprint("line ", n)}
			if n%5 == 0 {
				e.RunID = fmt.Sprint("run-", n%3)
			}
			evs = append(evs, e)
			kk := k{e.Cluster, e.Service}
			records[kk]++
			bytes[kk] += int64(len(e.Log))
			if levels[kk] == nil {
				levels[kk] = map[string]int64{}
			}
			levels[kk][e.Level]++
			if e.RunID != "" {
				if runs[kk] == nil {
					runs[kk] = map[string]int64{}
				}
				runs[kk][e.RunID]++
			}
		}
		w.Add(evs)
	}
	out := w.Cut(start.Add(10*time.Second), "i1")
	require.Len(t, out, len(records))
	for _, ls := range out {
		kk := k{ls.GetCluster(), ls.GetService()}
		require.Equal(t, records[kk], ls.GetRecords(), "%v", kk)
		require.Equal(t, bytes[kk], ls.GetBytes(), "%v", kk)
		require.Equal(t, levels[kk], ls.GetRecordsByLevel(), "%v", kk)
		if runs[kk] == nil {
			require.Empty(t, ls.GetRecordsByRun(), "%v", kk)
		} else {
			require.Equal(t, runs[kk], ls.GetRecordsByRun(), "%v", kk)
		}
		require.Equal(t, "i1", ls.GetInstance())
	}
	require.Empty(t, w.Cut(start.Add(20*time.Second), "i1"))
}
