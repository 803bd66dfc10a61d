// Package compat_test runs Forward clients that cannot share a test binary
// with fluent-logger-golang (both register MessagePack extension 0 in init).
package compat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/fluent-forward-go/fluent/client"
	"github.com/IBM/fluent-forward-go/fluent/protocol"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/logrouter/app"
)

type harness struct {
	t     *testing.T
	dir   string
	addrs app.Addrs
}

// start runs the logrouter without NATS on yaml ({dir}: a temp dir).
func start(t *testing.T, yaml string, env map[string]string) *harness {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "lr.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(strings.ReplaceAll(yaml, "{dir}", dir)), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, app.Config{ConfigFile: cfgPath, Instance: "compat", HTTPListen: "127.0.0.1:0", DrainTimeout: 5 * time.Second, StatsInterval: time.Second, NoNATS: true},
			app.Deps{Log: logging.New(io.Discard, 0, "logrouter"), Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Ready: func(a app.Addrs) { ready <- a }})
	}()
	h := &harness{t: t, dir: dir}
	select {
	case h.addrs = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return h
}

func (h *harness) metrics() map[string]map[string]map[string]int64 {
	resp, err := http.Get("http://" + h.addrs.HTTP + "/api/v1/metrics")
	require.NoError(h.t, err)
	defer resp.Body.Close()
	var m map[string]map[string]map[string]int64
	require.NoError(h.t, json.NewDecoder(resp.Body).Decode(&m))
	return m
}

// lines parses the complete lines of the output file. It is read while
// the logrouter may be writing it, and a reader can see a write half
// done: a last line without its newline is left for the next look.
func lines(t *testing.T, path string) []map[string]any {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []map[string]any
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			break
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(line, &m), "%q", line)
		out = append(out, m)
		b = rest
	}
	return out
}

// A second real Forward client, IBM/fluent-forward-go: the shared-key
// handshake (success and failure) and its PackedForward and
// CompressedPackedForward senders, with acks.
func TestIBMClientSharedKeyPackedCompressed(t *testing.T) {
	t.Parallel()
	h := start(t, `
inputs:
  forward:
    listen: 127.0.0.1:0
    sharedKey: ${KEY}
outputs:
  - name: archive
    type: file
    file: {path: "{dir}/out.ndjson"}
spool:
  dir: {dir}/spool
`, map[string]string{"KEY": "right-key"})
	out := filepath.Join(h.dir, "out.ndjson")
	newClient := func(key string) *client.Client {
		return client.New(client.ConnectionOptions{
			Factory:    &client.ConnFactory{Address: h.addrs.Forward, Timeout: 5 * time.Second},
			RequireAck: true,
			AuthInfo:   client.AuthInfo{SharedKey: []byte(key)},
		})
	}

	bad := newClient("wrong-key")
	require.NoError(t, bad.Connect())
	require.Error(t, bad.Handshake(), "a wrong shared key fails the handshake")
	_ = bad.Disconnect()

	c := newClient("right-key")
	require.NoError(t, c.Connect())
	defer c.Disconnect()
	require.NoError(t, c.Handshake())
	entries := func(prefix string, n int) protocol.EntryList {
		var el protocol.EntryList
		for i := 0; i < n; i++ {
			el = append(el, protocol.EntryExt{
				Timestamp: protocol.EventTime{Time: time.Date(2026, 11, 21, 8, 0, 0, 250_000_000, time.UTC)},
				Record:    map[string]interface{}{"log": `{"level":"debug","p":"` + prefix + `"}`, "cluster": "c", "service": "ibm"},
			})
		}
		return el
	}
	require.NoError(t, c.SendPacked("ibm.packed", entries("packed", 10)))
	require.NoError(t, c.SendCompressed("ibm.gz", entries("gz", 20)))
	require.Eventually(t, func() bool { return len(lines(t, out)) == 30 }, 5*time.Second, 20*time.Millisecond)
	for _, l := range lines(t, out) {
		require.Equal(t, "2026-11-21T08:00:00.25Z", l["time"])
		require.Equal(t, "debug", l["level"])
		require.Equal(t, "ibm", l["service"])
	}
	require.Eventually(t, func() bool {
		return h.metrics()["input"]["forward.0"]["protocol_errors_auth_failed"] == 1
	}, 5*time.Second, 20*time.Millisecond)
}
