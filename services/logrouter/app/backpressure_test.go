package app_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

const bpYAML = `
inputs:
  forward: {listen: 127.0.0.1:0}
outputs:
  - name: stuck
    type: file
    spoolMaxBytes: 64KiB
    retry: {initial: 20ms, max: 100ms}
    file: {path: "{dir}/blocked/logs.ndjson"}
  - name: lossy
    type: file
    whenFull: drop_newest
    spoolMaxBytes: 64KiB
    retry: {initial: 20ms, max: 100ms}
    file: {path: "{dir}/blocked2/logs.ndjson"}
routes:
  - match: {service: "blocking"}
    outputs: [stuck]
  - match: {service: "dropping"}
    outputs: [lossy]
spool:
  dir: {dir}/spool
`

func chunkFor(service string, i int, chunk string) []byte {
	var es [][]byte
	for j := 0; j < 20; j++ {
		es = append(es, fwtest.Entry(time.Now(), map[string]any{"log": string(make([]byte, 200)), "service": service, "cluster": "c", "n": i*100 + j}, fwtest.IntTime))
	}
	return fwtest.PackedForward("bp", es, chunk, true)
}

// A full spool stops the acks (and the reading) instead of dropping; once
// the output recovers, everything is delivered and acked.
func TestFullSpoolStopsAckingUntilOutputRecovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The output's directory is a file: the file output fails until it is removed.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "blocked"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "blocked2"), nil, 0o644))
	h := startIn(t, dir, startNATS(t), bpYAML, nil)

	c, err := net.Dial("tcp", h.addrs.Forward)
	require.NoError(t, err)
	defer c.Close()
	acks := fwtest.NewAckReader(c)
	sent := make(chan int, 1)
	go func() {
		n := 0
		for i := 0; i < 40; i++ { // ~190 KiB of records: about 3x the quota
			if _, err := c.Write(chunkFor("blocking", i, fmt.Sprint("chunk-", i))); err != nil {
				break
			}
			n++
		}
		sent <- n
	}()
	got := 0
	ackc := make(chan struct{}, 64)
	go func() {
		for {
			if _, err := acks.Read(); err != nil {
				return
			}
			ackc <- struct{}{}
		}
	}()
	// Acks stop short of all 40 chunks while the output is down.
	require.Eventually(t, func() bool {
		return h.metrics()["output"]["stuck"]["spool_bytes"] > 50<<10
	}, 10*time.Second, 20*time.Millisecond)
	drainAcks := func() {
		for {
			select {
			case <-ackc:
				got++
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drainAcks()
	require.Less(t, got, 40, "a full spool withholds acks")
	require.Greater(t, h.metrics()["output"]["stuck"]["errors"], int64(0))
	require.Zero(t, h.metrics()["output"]["stuck"]["dropped_records"])

	// drop_newest: same pressure on the other output drops and counts.
	c2, err := net.Dial("tcp", h.addrs.Forward)
	require.NoError(t, err)
	defer c2.Close()
	acks2 := fwtest.NewAckReader(c2)
	for i := 0; i < 40; i++ {
		_, err := c2.Write(chunkFor("dropping", i, "d"))
		require.NoError(t, err)
		_, err = acks2.Read()
		require.NoError(t, err, "drop_newest keeps acking")
	}
	require.Greater(t, h.metrics()["output"]["lossy"]["dropped_records"], int64(0))

	// The output recovers: every record arrives, every chunk is acked.
	require.NoError(t, os.Remove(filepath.Join(dir, "blocked")))
	require.Eventually(t, func() bool {
		select {
		case <-ackc:
			got++
		default:
		}
		return got == 40
	}, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, 40, <-sent)
	require.Eventually(t, func() bool {
		return len(lines(t, filepath.Join(dir, "blocked", "logs.ndjson"))) == 800
	}, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return h.metrics()["output"]["stuck"]["spool_bytes"] == 0 }, 10*time.Second, 20*time.Millisecond)
}
