package app_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestDaemonStatsHealthAndPrometheus(t *testing.T) {
	t.Parallel()
	h := start(t, fileYAML, nil)
	stats := make(chan *v1.DaemonStats, 16)
	sub, err := h.nc.Subscribe("taskyard.stats.logrouter.test", func(m *nats.Msg) {
		var ds v1.DaemonStats
		if proto.Unmarshal(m.Data, &ds) == nil {
			stats <- &ds
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	c, acks := rawConn(t, h.addrs.Forward)
	_, err = c.Write(fwtest.PackedForward("m", [][]byte{fwtest.Entry(time.Now(), fireLens("a"), fwtest.IntTime), fwtest.Entry(time.Now(), fireLens("b"), fwtest.IntTime)}, "c", true))
	require.NoError(t, err)
	_, err = acks.Read()
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		select {
		case ds := <-stats:
			return ds.Input["forward.0"].GetCounters()["records"] == 2 && ds.Output["archive"].GetCounters()["proc_records"] == 2 &&
				ds.Daemon == "logrouter" && ds.Gauges["spool_bytes"] == 0
		default:
			return false
		}
	}, 10*time.Second, 50*time.Millisecond)

	code, body := get(t, "http://"+h.addrs.HTTP+"/api/v1/health")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = get(t, "http://"+h.addrs.HTTP+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `logrouter_input_records_total{input="forward.0"`)
	require.Contains(t, body, `logrouter_output_total{counter="proc_records",output="archive"`)
	require.Contains(t, body, `logrouter_spool_bytes`)
	code, _ = get(t, "http://"+h.addrs.HTTP+"/readyz")
	require.Equal(t, http.StatusOK, code)
}
