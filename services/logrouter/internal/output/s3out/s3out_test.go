package s3out

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// fakeS3 is gofakes3 over real HTTP with a bucket "logs".
func fakeS3(t *testing.T) *s3.Client {
	c, _ := fakeS3Parts(t)
	return c
}

// fakeS3Parts also counts UploadPart requests.
func fakeS3Parts(t *testing.T) (*s3.Client, *atomic.Int64) {
	t.Helper()
	parts := &atomic.Int64{}
	fake := gofakes3.New(s3mem.New()).Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" {
			parts.Add(1)
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c := s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.URL), Region: "us-east-1", UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	})
	_, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("logs")})
	require.NoError(t, err)
	return c, parts
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func objects(t *testing.T, c *s3.Client) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	l, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("logs")})
	require.NoError(t, err)
	for _, o := range l.Contents {
		g, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("logs"), Key: o.Key})
		require.NoError(t, err)
		zr, err := gzip.NewReader(g.Body)
		require.NoError(t, err)
		sc := bufio.NewScanner(zr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			out[*o.Key] = append(out[*o.Key], sc.Text())
		}
		require.NoError(t, sc.Err())
		g.Body.Close()
	}
	return out
}

func ev(service string, t time.Time, log string) event.Event {
	return event.Event{Time: t, Cluster: "prod", Service: service, Level: "info", Log: log}
}

func TestGroupsByKeyAndFlushesOnAgeSizeAndDrain(t *testing.T) {
	t.Parallel()
	client := fakeS3(t)
	clk := &clock{t: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
	var c output.Counters
	s, err := New(Config{Bucket: "logs", KeyTemplate: "{cluster}/{service}/%Y/%m/%d/%H/{unique}.ndjson.gz", FlushBytes: 4000, FlushAge: 5 * time.Minute, Format: event.FormatRaw, ID: "i1", Now: clk.now}, client, &c)
	require.NoError(t, err)
	ctx := context.Background()
	h10 := time.Date(2026, 11, 21, 10, 59, 0, 0, time.UTC)
	h11 := h10.Add(2 * time.Minute)
	p1 := spool.Pos{Seg: 1, Off: 100}
	safe, err := s.Deliver(ctx, []event.Event{ev("a", h10, "a1"), ev("a", h11, "a2"), ev("b", h10, "b1")}, p1)
	require.NoError(t, err)
	require.Equal(t, spool.Pos{}, safe, "nothing uploaded: nothing safe to commit")
	_, _, err = s.Flush(ctx, false)
	require.NoError(t, err)
	require.Empty(t, objects(t, client), "young, small groups are not uploaded")

	clk.add(5 * time.Minute)
	safe, _, err = s.Flush(ctx, false)
	require.NoError(t, err)
	require.Equal(t, p1, safe)
	objs := objects(t, client)
	require.Len(t, objs, 3)
	var keys []string
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	require.Regexp(t, `^prod/a/2026/11/21/10/i1-\d+-\d+\.ndjson\.gz$`, keys[0])
	require.Regexp(t, `^prod/a/2026/11/21/11/`, keys[1])
	require.Regexp(t, `^prod/b/2026/11/21/10/`, keys[2])
	require.Equal(t, []string{"a1"}, objs[keys[0]])
	require.Equal(t, int64(3), c.ProcRecords.Load())

	// Size: a group past FlushBytes is uploaded at the next flush.
	var big []event.Event
	for i := 0; i < 100; i++ {
		big = append(big, ev("c", h10, fmt.Sprintf("line-%03d-%s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")))
	}
	p2 := spool.Pos{Seg: 1, Off: 200}
	_, err = s.Deliver(ctx, big, p2)
	require.NoError(t, err)
	_, err = s.Deliver(ctx, []event.Event{ev("d", h10, "d1")}, spool.Pos{Seg: 1, Off: 300})
	require.NoError(t, err)
	safe, _, err = s.Flush(ctx, false)
	require.NoError(t, err)
	require.Equal(t, p2, safe, "d's group is still open: commit stops before it")
	require.Len(t, objects(t, client), 4)

	// Drain uploads everything.
	safe, _, err = s.Flush(ctx, true)
	require.NoError(t, err)
	require.Equal(t, spool.Pos{Seg: 1, Off: 300}, safe)
	require.Len(t, objects(t, client), 5)
}

func TestMultipartForLargeObjects(t *testing.T) {
	t.Parallel()
	client, parts := fakeS3Parts(t)
	var c output.Counters
	s, err := New(Config{Bucket: "logs", KeyTemplate: "{service}/{unique}.gz", FlushBytes: 64 << 20, FlushAge: time.Hour, PartBytes: 256 << 10, Format: event.FormatRaw, ID: "i"}, client, &c)
	require.NoError(t, err)
	// ~800 KiB of incompressible lines: several 256 KiB parts gzipped.
	var evs []event.Event
	raw := make([]byte, 600)
	for i := 0; i < 1300; i++ {
		_, _ = rand.Read(raw)
		evs = append(evs, ev("big", time.Now(), fmt.Sprintf("%05d %s", i, base64.StdEncoding.EncodeToString(raw))))
	}
	_, err = s.Deliver(context.Background(), evs, spool.Pos{Seg: 1, Off: 1})
	require.NoError(t, err)
	var buf bytes.Buffer
	for _, g := range s.open {
		require.NoError(t, g.zw.Flush())
		buf.Write(g.buf.Bytes())
	}
	require.Greater(t, buf.Len(), 2*(256<<10), "the object needs at least three parts")
	_, _, err = s.Flush(context.Background(), true)
	require.NoError(t, err)
	l, err := client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("logs")})
	require.NoError(t, err)
	size := aws.ToInt64(l.Contents[0].Size)
	require.Equal(t, (size+(256<<10)-1)/(256<<10), parts.Load(), "uploaded in 256 KiB parts")
	require.GreaterOrEqual(t, parts.Load(), int64(3))
	objs := objects(t, client)
	require.Len(t, objs, 1)
	for _, lines := range objs {
		require.Len(t, lines, 1300)
		require.Equal(t, "00000 ", lines[0][:6])
		require.Equal(t, "01299 ", lines[1299][:6])
	}
}

// TestObjectNamedAfterFirstRecord: with spool positions (as the runner
// delivers), an object is named <ID>-<segment>-<offset> of its first
// record, so the upload a restarted logrouter repeats (the process died
// after an upload, before the spool commit) replaces the object instead of
// adding a second copy of its records.
func TestObjectNamedAfterFirstRecord(t *testing.T) {
	t.Parallel()
	client := fakeS3(t)
	h := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	evs := []event.Event{ev("a", h, "a1"), ev("b", h, "b1"), ev("a", h, "a2")}
	at := []spool.Pos{{Seg: 3, Off: 100}, {Seg: 3, Off: 150}, {Seg: 3, Off: 200}}
	end := spool.Pos{Seg: 3, Off: 250}
	for run := 0; run < 2; run++ { // before the crash, and the repeat after it
		var c output.Counters
		s, err := New(Config{Bucket: "logs", KeyTemplate: "{service}/{unique}.gz", FlushBytes: 64 << 20, FlushAge: time.Hour, Format: event.FormatRaw, ID: "0123456789abcdef"}, client, &c)
		require.NoError(t, err)
		_, err = s.DeliverAt(context.Background(), evs, at, end)
		require.NoError(t, err)
		safe, _, err := s.Flush(context.Background(), true)
		require.NoError(t, err)
		require.Equal(t, end, safe)
		require.Equal(t, map[string][]string{
			"a/0123456789abcdef-3-100.gz": {"a1", "a2"},
			"b/0123456789abcdef-3-150.gz": {"b1"},
		}, objects(t, client), "run %d", run)
	}
}

// TestUploadLogSkipsWhatWasUploadedBeforeACrash: objects of one prefix
// were uploaded while an object of another prefix held the spool commit
// back, then the process died. The restarted sink gets the same records
// again, grouped differently (one batch now); the upload log makes it skip
// the records already uploaded instead of storing them twice.
func TestUploadLogSkipsWhatWasUploadedBeforeACrash(t *testing.T) {
	t.Parallel()
	client := fakeS3(t)
	ctx := context.Background()
	h := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	big := strings.Repeat("x", 300)
	a1, b2, b4, a3 := ev("a", h, "a1"), ev("b", h, "b2"+big), ev("b", h, "b4"+big), ev("a", h, "a3")
	p := func(off int64) spool.Pos { return spool.Pos{Seg: 1, Off: off} }
	logPath := filepath.Join(t.TempDir(), "s3-uploads.ndjson")
	cfg := Config{Bucket: "logs", KeyTemplate: "{service}/{unique}.gz", FlushBytes: 200, FlushAge: time.Hour, Format: event.FormatRaw, ID: "0123456789abcdef", UploadLog: logPath}

	var c1 output.Counters
	s1, err := New(cfg, client, &c1)
	require.NoError(t, err)
	_, err = s1.DeliverAt(ctx, []event.Event{a1, b2}, []spool.Pos{p(100), p(200)}, p(300))
	require.NoError(t, err)
	safe, _, err := s1.Flush(ctx, false) // b2 fills an object; a1's stays open
	require.NoError(t, err)
	require.Equal(t, p(100), safe, "the open object of a holds the commit back")
	_, err = s1.DeliverAt(ctx, []event.Event{b4}, []spool.Pos{p(300)}, p(400))
	require.NoError(t, err)
	safe, _, err = s1.Flush(ctx, false)
	require.NoError(t, err)
	require.Equal(t, p(100), safe)
	// The process dies here (no Close, nothing committed past a1).

	var c2 output.Counters
	s2, err := New(cfg, client, &c2)
	require.NoError(t, err)
	_, err = s2.DeliverAt(ctx, []event.Event{a1, b2, b4, a3}, []spool.Pos{p(100), p(200), p(300), p(400)}, p(500))
	require.NoError(t, err)
	safe, _, err = s2.Flush(ctx, true)
	require.NoError(t, err)
	require.Equal(t, p(500), safe)
	require.Equal(t, map[string][]string{
		"a/0123456789abcdef-1-100.gz": {"a1", "a3"},
		"b/0123456789abcdef-1-200.gz": {"b2" + big},
		"b/0123456789abcdef-1-300.gz": {"b4" + big},
	}, objects(t, client))
	require.Equal(t, int64(2), c2.ProcRecords.Load(), "only a1 and a3 uploaded after the restart")

	// Committed past everything: the next flush empties the log.
	_, _, err = s2.Flush(ctx, false)
	require.NoError(t, err)
	require.NoError(t, s2.Close())
	b, err := os.ReadFile(logPath)
	require.NoError(t, err)
	require.Empty(t, b)
}
