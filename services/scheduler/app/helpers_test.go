package app_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/scheduler/app"
)

// startNATS starts an embedded JetStream server and returns a client.
func startNATS(t *testing.T) (*nats.Conn, string) {
	t.Helper()
	srv, err := natsconn.StartEmbedded(natsconn.EmbeddedConfig{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc, srv.ClientURL()
}

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func baseConfig(url string) app.Config {
	var cfg app.Config
	cfg.NATS.URL = url
	cfg.NATS.Prefix = v1.DefaultPrefix
	cfg.NATS.Replicas = 1
	cfg.Runner = app.RunnerExec
	cfg.Instance = "test"
	cfg.LeaseTTL = time.Second
	cfg.ReleaseLease = true
	cfg.KillGrace = 2 * time.Second
	cfg.ClaimAhead = 200 * time.Millisecond
	cfg.LogLevel = "info"
	return cfg
}

// instance is one app.Run in the background.
type instance struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (i *instance) stop(t *testing.T) {
	t.Helper()
	i.cancel()
	select {
	case <-i.done:
		require.NoError(t, i.err)
	case <-time.After(30 * time.Second):
		t.Fatal("app.Run did not return")
	}
}

func start(t *testing.T, cfg app.Config, deps app.Deps) *instance {
	t.Helper()
	if deps.Log == nil {
		deps.Log = logging.New(testWriter{t}, -4, "scheduler")
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{cancel: cancel, done: make(chan struct{})}
	go func() {
		inst.err = app.Run(ctx, cfg, deps)
		close(inst.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-inst.done:
		case <-time.After(30 * time.Second):
		}
	})
	return inst
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// request sends a control request and decodes the reply into reply.
func request(t *testing.T, nc *nats.Conn, verb string, req, reply proto.Message) {
	t.Helper()
	data, err := proto.Marshal(req)
	require.NoError(t, err)
	var m *nats.Msg
	require.Eventually(t, func() bool {
		m, err = nc.Request(v1.Subjects{}.Ctl("scheduler", verb), data, 5*time.Second)
		return err == nil
	}, 20*time.Second, 100*time.Millisecond, "request %s", verb)
	require.NoError(t, proto.Unmarshal(m.Data, reply))
}

// events collects every message of the RUNS stream.
type events struct {
	mu   sync.Mutex
	msgs []proto.Message
	ids  []string
}

func collect(t *testing.T, nc *nats.Conn) *events {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ev := &events{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var cons jetstream.Consumer
	require.Eventually(t, func() bool {
		cons, err = js.OrderedConsumer(ctx, "RUNS", jetstream.OrderedConsumerConfig{})
		return err == nil
	}, 20*time.Second, 50*time.Millisecond)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		msg, err := v1.Decode("", m.Subject(), m.Headers(), m.Data())
		if err != nil {
			return
		}
		ev.mu.Lock()
		ev.msgs = append(ev.msgs, msg)
		ev.ids = append(ev.ids, m.Headers().Get(jetstream.MsgIDHeader))
		ev.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	return ev
}

func all[T proto.Message](e *events) []T {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []T
	for _, m := range e.msgs {
		if x, ok := m.(T); ok {
			out = append(out, x)
		}
	}
	return out
}
