package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/logrouter/app"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

// harness runs app.Run against an embedded NATS server.
type harness struct {
	t      *testing.T
	addrs  app.Addrs
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	dir    string
	stdout *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// start boots the logrouter with yaml (where {dir} is a temp dir).
func start(t *testing.T, yaml string, env map[string]string) *harness {
	t.Helper()
	return startIn(t, t.TempDir(), startNATS(t), yaml, env)
}

func startIn(t *testing.T, dir string, nc *nats.Conn, yaml string, env map[string]string) *harness {
	t.Helper()
	cfgPath := filepath.Join(dir, "logrouter.yml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(strings.ReplaceAll(yaml, "{dir}", dir)), 0o644))
	h := &harness{t: t, nc: nc, done: make(chan error, 1), dir: dir, stdout: &syncBuf{}}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	ready := make(chan app.Addrs, 1)
	cfg := app.Config{ConfigFile: cfgPath, Instance: "test", HTTPListen: "127.0.0.1:0", DrainTimeout: 5 * time.Second, StatsInterval: time.Second}
	cfg.NATS.Prefix = v1.DefaultPrefix
	cfg.NATS.Replicas = 1
	go func() {
		h.done <- app.Run(ctx, cfg, app.Deps{
			Log: logging.New(io.Discard, 0, "logrouter"), NC: nc, Stdout: h.stdout,
			Env:   func(k string) (string, bool) { v, ok := env[k]; return v, ok },
			Ready: func(a app.Addrs) { ready <- a },
		})
	}()
	select {
	case h.addrs = <-ready:
	case err := <-h.done:
		t.Fatalf("app.Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("logrouter did not start")
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	select {
	case err := <-h.done:
		require.NoError(h.t, err)
		h.done <- nil
	case <-time.After(30 * time.Second):
		h.t.Fatal("logrouter did not stop")
	}
}

func (h *harness) port() int {
	_, p, _ := net.SplitHostPort(h.addrs.Forward)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func (h *harness) metrics() map[string]map[string]map[string]int64 {
	resp, err := http.Get("http://" + h.addrs.HTTP + "/api/v1/metrics")
	require.NoError(h.t, err)
	defer resp.Body.Close()
	var m map[string]map[string]map[string]int64
	require.NoError(h.t, json.NewDecoder(resp.Body).Decode(&m))
	return m
}

// lines parses the complete lines of the NDJSON file output. It is read
// while the logrouter may be writing it, and a reader can see a write half
// done: a last line without its newline is left for the next look.
func lines(t *testing.T, path string) []map[string]any {
	t.Helper()
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

const fileYAML = `
inputs:
  forward:
    listen: 127.0.0.1:0
pipeline:
  staticTags: [env:test]
  redact:
    - pattern: 'password=\S+'
      mask: 'password=***'
outputs:
  - name: archive
    type: file
    file:
      path: {dir}/out/logs.ndjson
spool:
  dir: {dir}/spool
`

func fireLens(line string) map[string]any {
	return map[string]any{
		"log":                 line,
		"source":              "stdout",
		"container_name":      "app",
		"container_id":        "abc123",
		"ecs_cluster":         "prod",
		"ecs_task_arn":        "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef",
		"ecs_task_definition": "taskyard-job-nightly-report:7",
	}
}

func TestFluentLoggerAckSubSecondAndIntegerTime(t *testing.T) {
	t.Parallel()
	h := start(t, fileYAML, nil)
	out := filepath.Join(h.dir, "out", "logs.ndjson")
	base := time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC)

	for _, subSec := range []bool{true, false} {
		fl, err := fluent.New(fluent.Config{FluentHost: "127.0.0.1", FluentPort: h.port(), RequestAck: true, SubSecondPrecision: subSec, Timeout: 5 * time.Second})
		require.NoError(t, err)
		for i := 0; i < 5; i++ {
			rec := fireLens(fmt.Sprintf(`{"level":"WARNING","msg":"job step %d","subsec":%v,"n":%d}`, i, subSec, i))
			if i == 4 {
				rec["log"] = "plain text password=hunter2"
			}
			// With RequestAck, Post returns only after the logrouter's ack.
			require.NoError(t, fl.PostWithTime("ecs.app", base.Add(time.Duration(i)*time.Second+123456789*time.Nanosecond), rec))
		}
		require.NoError(t, fl.Close())
	}
	require.Eventually(t, func() bool { return len(lines(t, out)) == 10 }, 10*time.Second, 20*time.Millisecond)
	got := lines(t, out)
	for _, l := range got {
		require.Equal(t, "prod", l["cluster"])
		require.Equal(t, "nightly-report", l["service"], "service from the task definition family taskyard-job-<schedule>")
		require.Equal(t, "app", l["container"])
		require.Equal(t, "0123456789abcdef", l["task"])
		require.Equal(t, "stdout", l["source"])
		require.Equal(t, "ecs.app", l["tag"])
	}
	// Sub-second EventTime keeps nanoseconds; integer time is whole seconds.
	require.Equal(t, "2026-11-21T09:30:00.123456789Z", got[0]["time"])
	require.Equal(t, "2026-11-21T09:30:00Z", got[5]["time"])
	require.Equal(t, "warn", got[0]["level"])
	attrs := got[0]["attributes"].(map[string]any)
	require.Equal(t, "job step 0", attrs["msg"])
	require.Equal(t, "plain text password=***", got[4]["log"], "redaction applies before output")
	require.Equal(t, "unknown", got[4]["level"])
	require.Nil(t, got[4]["attributes"])

	m := h.metrics()
	require.Equal(t, int64(10), m["input"]["forward.0"]["records"])
	require.Eventually(t, func() bool { return h.metrics()["output"]["archive"]["proc_records"] == 10 }, 5*time.Second, 20*time.Millisecond)
}

// rawConn is a hand-written Fluent Bit: pipelined frames, acks read back.
func rawConn(t *testing.T, addr string) (net.Conn, *fwtest.AckReader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, fwtest.NewAckReader(c)
}

func TestFluentBitPackedForwardPipelined(t *testing.T) {
	t.Parallel()
	h := start(t, fileYAML, nil)
	out := filepath.Join(h.dir, "out", "logs.ndjson")
	c, acks := rawConn(t, h.addrs.Forward)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 5000, time.UTC)
	mk := func(prefix string, n int, form fwtest.TimeForm) [][]byte {
		var es [][]byte
		for i := 0; i < n; i++ {
			r := fireLens(fmt.Sprintf(`{"severity":"error","id":"%s-%d"}`, prefix, i))
			r["taskyard_run_id"] = "run-" + prefix
			es = append(es, fwtest.Entry(t0, r, form))
		}
		return es
	}
	frames := [][]byte{
		fwtest.PackedForward("fb", mk("bin", 100, fwtest.FluentBitV2), "chunk-bin-\x00\xff", true),
		fwtest.PackedForward("fb", mk("str", 50, fwtest.EventTimeFix), "chunk-str", false),
		fwtest.CompressedPackedForward("fb", mk("gz", 300, fwtest.FluentBitV2), "chunk-gz", 4),
		fwtest.Forward("fb", mk("fwd", 20, fwtest.EventTimeExt8), "chunk-fwd"),
		fwtest.Message("fb", t0, fireLens("single"), "chunk-msg"),
	}
	// Pipelined: every frame is written before any ack is read.
	for _, f := range frames {
		_, err := c.Write(f)
		require.NoError(t, err)
	}
	want := []string{"chunk-bin-\x00\xff", "chunk-str", "chunk-gz", "chunk-fwd", "chunk-msg"}
	for _, w := range want {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		id, err := acks.Read()
		require.NoError(t, err)
		require.Equal(t, w, id, "chunk id echoed byte for byte, in order")
	}
	// Acked means durable: the records are in the spool now; the file
	// output gets all of them.
	require.Eventually(t, func() bool { return len(lines(t, out)) == 471 }, 10*time.Second, 20*time.Millisecond)
	ids := map[string]bool{}
	for _, l := range lines(t, out) {
		if a, ok := l["attributes"].(map[string]any); ok {
			ids[a["id"].(string)] = true
			require.Equal(t, "error", l["level"])
			require.Equal(t, "2026-11-21T12:00:00.000005Z", l["time"])
		}
	}
	require.Len(t, ids, 470)
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	t.Parallel()
	h := start(t, strings.Replace(fileYAML, "listen: 127.0.0.1:0", "listen: 127.0.0.1:0\n    maxFrameBytes: 1MiB", 1), nil)
	out := filepath.Join(h.dir, "out", "logs.ndjson")
	good, goodAcks := rawConn(t, h.addrs.Forward)
	bad := map[string][]byte{
		"malformed":        {0xc1, 0xc1, 0xc1},
		"wrong_type":       {0x92, 0x01, 0x90},
		"invalid_utf8_tag": {0x92, 0xa2, 0xff, 0xfe, 0x90},
		// CompressedPackedForward whose gzip bytes are garbage.
		"bad_gzip": {0x93, 0xa1, 'x', 0xc4, 0x04, 0x1f, 0x8b, 0x00, 0x00, 0x81, 0xaa, 'c', 'o', 'm', 'p', 'r', 'e', 's', 's', 'e', 'd', 0xa4, 'g', 'z', 'i', 'p'},
	}
	for name, frame := range bad {
		c, err := net.Dial("tcp", h.addrs.Forward)
		require.NoError(t, err)
		_, err = c.Write(frame)
		require.NoError(t, err)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, io.EOF, "%s: the logrouter closes the connection", name)
		c.Close()
	}
	// Truncated frame: the client hangs up mid-message.
	c, err := net.Dial("tcp", h.addrs.Forward)
	require.NoError(t, err)
	f := fwtest.PackedForward("x", [][]byte{fwtest.Entry(time.Now(), map[string]any{"log": "a"}, fwtest.IntTime)}, "c", true)
	_, err = c.Write(f[:len(f)/2])
	require.NoError(t, err)
	c.Close()

	// A message larger than maxFrameBytes (1 MiB here).
	c, err = net.Dial("tcp", h.addrs.Forward)
	require.NoError(t, err)
	big := fwtest.Message("x", time.Now(), map[string]any{"log": strings.Repeat("x", 1200<<10)}, "big")
	_, _ = c.Write(big) // the server may close before reading it all
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err, "oversize: closed, no ack")
	c.Close()

	require.Eventually(t, func() bool { return h.metrics()["input"]["forward.0"]["protocol_errors"] == 6 }, 5*time.Second, 20*time.Millisecond)
	m := h.metrics()["input"]["forward.0"]
	require.Equal(t, int64(1), m["protocol_errors_bad_gzip"])
	require.Equal(t, int64(1), m["protocol_errors_wrong_type"])
	require.Equal(t, int64(1), m["protocol_errors_invalid_utf8"])
	require.Equal(t, int64(1), m["protocol_errors_oversize"])
	require.Equal(t, int64(2), m["protocol_errors_malformed"], "garbage and the truncated frame")

	// The good connection, opened before, is still served.
	_, err = good.Write(fwtest.Message("ok", time.Now(), map[string]any{"log": "still here"}, "after-bad"))
	require.NoError(t, err)
	id, err := goodAcks.Read()
	require.NoError(t, err)
	require.Equal(t, "after-bad", id)
	require.Eventually(t, func() bool { return len(lines(t, out)) == 1 }, 5*time.Second, 20*time.Millisecond)
}

func TestLogStatsAndLiveTail(t *testing.T) {
	t.Parallel()
	h := start(t, fileYAML, nil)
	stats := make(chan *v1.LogStats, 16)
	sub, err := h.nc.Subscribe("taskyard.logs.stats.>", func(m *nats.Msg) {
		var ls v1.LogStats
		if proto.Unmarshal(m.Data, &ls) == nil {
			stats <- &ls
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	inbox := nats.NewInbox()
	tailLines := make(chan *v1.TailLine, 16)
	tsub, err := h.nc.Subscribe(inbox, func(m *nats.Msg) {
		var tl v1.TailLine
		if proto.Unmarshal(m.Data, &tl) == nil {
			tailLines <- &tl
		}
	})
	require.NoError(t, err)
	defer tsub.Unsubscribe()
	req, _ := proto.Marshal(&v1.TailRequest{Inbox: inbox, Service: "nightly-*", Level: "warn", TtlSeconds: 30})
	resp, err := h.nc.Request("taskyard.ctl.logrouter.tail", req, 5*time.Second)
	require.NoError(t, err)
	var ack v1.AckReply
	require.NoError(t, proto.Unmarshal(resp.Data, &ack))
	require.Empty(t, ack.Error)

	c, acks := rawConn(t, h.addrs.Forward)
	var es [][]byte
	for i, lvl := range []string{"info", "error", "debug"} {
		r := fireLens(fmt.Sprintf(`{"level":%q,"i":%d}`, lvl, i))
		r["taskyard_run_id"] = "run-1"
		es = append(es, fwtest.Entry(time.Now(), r, fwtest.EventTimeFix))
	}
	other := map[string]any{"log": "x", "cluster": "dev", "service": "other", "level": "error"}
	es = append(es, fwtest.Entry(time.Now(), other, fwtest.IntTime))
	_, err = c.Write(fwtest.PackedForward("t", es, "c1", true))
	require.NoError(t, err)
	_, err = acks.Read()
	require.NoError(t, err)

	select {
	case tl := <-tailLines:
		require.Equal(t, "error", tl.Level)
		require.Equal(t, "nightly-report", tl.Service)
		require.Contains(t, tl.Log, `"i":1`)
	case <-time.After(5 * time.Second):
		t.Fatal("no tail line")
	}
	select {
	case tl := <-tailLines:
		t.Fatalf("unexpected tail line %v (filtered by service and level)", tl)
	default:
	}
	got := map[string]*v1.LogStats{}
	require.Eventually(t, func() bool {
		for {
			select {
			case ls := <-stats:
				got[ls.Cluster+"/"+ls.Service] = ls
			default:
				return len(got) == 2
			}
		}
	}, 10*time.Second, 50*time.Millisecond)
	ls := got["prod/nightly-report"]
	require.Equal(t, int64(3), ls.Records)
	require.Equal(t, map[string]int64{"info": 1, "error": 1, "debug": 1}, ls.RecordsByLevel)
	require.Equal(t, map[string]int64{"run-1": 3}, ls.RecordsByRun)
	require.Equal(t, "test", ls.Instance)
	require.Equal(t, int64(1), got["dev/other"].Records)
}
