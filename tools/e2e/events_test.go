package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

var subj = v1.Subjects{Prefix: "taskyard"}

// collector records every message published on a subject (a core NATS
// subscription sees a publish even when JetStream drops it as a
// duplicate, which is what "dispatched twice" checks need).
type collector struct {
	mu   sync.Mutex
	msgs []proto.Message
}

func (s *stack) collect(t *testing.T, filter string) *collector {
	t.Helper()
	c := &collector{}
	sub, err := s.nc.Subscribe(filter, func(m *nats.Msg) {
		msg, err := v1.Decode("taskyard", m.Subject, m.Header, m.Data)
		if err != nil {
			t.Errorf("decode %s: %v", m.Subject, err)
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, msg)
		c.mu.Unlock()
	})
	require.NoError(t, err)
	require.NoError(t, s.nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *collector) all() []proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]proto.Message(nil), c.msgs...)
}

// stored reads every message of stream matching filter, in stream order.
func (s *stack) stored(t *testing.T, stream, filter string) []proto.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(s.nc)
	require.NoError(t, err)
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	pending := info.NumPending
	var out []proto.Message
	for uint64(len(out)) < pending {
		batch, err := cons.Fetch(int(min(pending-uint64(len(out)), 500)), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			msg, err := v1.Decode("taskyard", m.Subject(), m.Headers(), m.Data())
			require.NoError(t, err)
			out = append(out, msg)
		}
		require.NoError(t, batch.Error())
		require.NotZero(t, n, "stream %s %s: %d of %d messages read, then nothing", stream, filter, len(out), pending)
	}
	return out
}

// finished waits for the RunFinished of runID.
func (s *stack) finished(t *testing.T, schedule, runID string, within time.Duration) *v1.RunFinished {
	t.Helper()
	var got *v1.RunFinished
	require.Eventually(t, func() bool {
		for _, m := range s.stored(t, v1.Streams("taskyard").Runs, subj.RunFinished(schedule)) {
			if f, ok := m.(*v1.RunFinished); ok && f.GetRunId() == runID {
				got = f
				return true
			}
		}
		return false
	}, within, 500*time.Millisecond, "no RunFinished for run %s of %s within %s", runID, schedule, within)
	return got
}

// s3Client talks to the stack's S3 (fakes3 or MinIO) with the real SDK.
func s3Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://127.0.0.1:" + s3Port),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("taskyard", "taskyard-secret", ""),
	})
}

// logLine is one line of an S3 object of the logrouter (format json).
type logLine struct {
	Time       time.Time       `json:"time"`
	Cluster    string          `json:"cluster"`
	Service    string          `json:"service"`
	Container  string          `json:"container"`
	Task       string          `json:"task"`
	Source     string          `json:"source"`
	Level      string          `json:"level"`
	RunID      string          `json:"run_id"`
	Tag        string          `json:"tag"`
	Log        string          `json:"log"`
	Attributes json.RawMessage `json:"attributes"`
	key        string
}

// s3Lines reads every line of every object under prefix.
func s3Lines(ctx context.Context, prefix string) ([]logLine, error) {
	c := s3Client()
	var out []logLine
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, o := range page.Contents {
			obj, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				return nil, fmt.Errorf("get %s: %w", aws.ToString(o.Key), err)
			}
			data, err := io.ReadAll(obj.Body)
			obj.Body.Close()
			if err != nil {
				return nil, err
			}
			r := io.Reader(bytes.NewReader(data))
			if strings.HasSuffix(aws.ToString(o.Key), ".gz") {
				gz, err := gzip.NewReader(r)
				if err != nil {
					return nil, fmt.Errorf("gunzip %s: %w", aws.ToString(o.Key), err)
				}
				r = gz
			}
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 1<<20), 4<<20)
			for sc.Scan() {
				var l logLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					return nil, fmt.Errorf("%s: line %q: %w", aws.ToString(o.Key), sc.Text(), err)
				}
				l.key = aws.ToString(o.Key)
				out = append(out, l)
			}
			if err := sc.Err(); err != nil {
				return nil, fmt.Errorf("read %s: %w", aws.ToString(o.Key), err)
			}
		}
	}
	return out, nil
}

// datePrefix is cluster/service/YYYY/MM/DD/ of today (UTC).
func datePrefix(clusterName, service string) string {
	return clusterName + "/" + service + "/" + time.Now().UTC().Format("2006/01/02") + "/"
}

// metrics reads the exporter's /api/v1/metrics.
func metrics(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, getJSON("http://127.0.0.1:"+exporterPort+"/api/v1/metrics", &m))
	return m
}

// num digs a number out of nested maps ("schedule", "e2e-ok", "succeeded").
func num(m map[string]any, path ...string) (float64, bool) {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return 0, false
		}
		cur = mm[p]
	}
	f, ok := cur.(float64)
	return f, ok
}
