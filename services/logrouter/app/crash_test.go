package app_test

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/logrouter/app"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

// fakeS3 serves gofakes3 over real HTTP with a bucket "logs".
func fakeS3(t *testing.T) (*httptest.Server, *s3.Client) {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	c := s3.New(s3.Options{
		BaseEndpoint: aws.String(srv.URL), Region: "us-east-1", UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	})
	_, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("logs")})
	require.NoError(t, err)
	return srv, c
}

// s3IDs counts the "id" attribute of every record in the bucket.
func s3IDs(t *testing.T, c *s3.Client) map[string]int {
	t.Helper()
	ids, err := listS3IDs(c)
	require.NoError(t, err)
	return ids
}

// listS3IDs is s3IDs for conditions polled from another goroutine.
func listS3IDs(c *s3.Client) (map[string]int, error) {
	ids := map[string]int{}
	var token *string
	for {
		l, err := c.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("logs"), ContinuationToken: token})
		if err != nil {
			return nil, err
		}
		for _, o := range l.Contents {
			if err := objectIDs(c, aws.ToString(o.Key), ids); err != nil {
				return nil, fmt.Errorf("object %s: %w", aws.ToString(o.Key), err)
			}
		}
		if !aws.ToBool(l.IsTruncated) {
			return ids, nil
		}
		token = l.NextContinuationToken
	}
}

func objectIDs(c *s3.Client, key string, ids map[string]int) error {
	g, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String("logs"), Key: aws.String(key)})
	if err != nil {
		return err
	}
	defer g.Body.Close()
	zr, err := gzip.NewReader(g.Body)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		var m struct {
			Attributes struct{ ID string } `json:"attributes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return err
		}
		ids[m.Attributes.ID]++
	}
	return sc.Err()
}

const crashYAML = `
inputs:
  forward: {listen: 127.0.0.1:0}
outputs:
  - name: archive
    type: s3
    retry: {initial: 50ms, max: 500ms}
    s3:
      bucket: logs
      endpoint: ${S3_ENDPOINT}
      forcePathStyle: true
      region: us-east-1
      flushBytes: 1MiB
      flushAge: 1s
spool:
  dir: {dir}/spool
`

// TestCrashChildProcess is the logrouter child of TestCrashKillRestart;
// it does nothing in a normal run.
func TestCrashChildProcess(t *testing.T) {
	dir := os.Getenv("LOGROUTER_CRASH_DIR")
	if dir == "" {
		t.Skip("child process of TestCrashKillRestart")
	}
	ctx, stop := signalContext()
	defer stop()
	cfg := app.Config{ConfigFile: filepath.Join(dir, "logrouter.yml"), Instance: "child", HTTPListen: "127.0.0.1:0", DrainTimeout: 20 * time.Second, StatsInterval: time.Second, NoNATS: true}
	ac := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	err := app.Run(ctx, cfg, app.Deps{
		Log: logging.New(os.Stderr, 0, "logrouter"), AWS: &ac,
		Ready: func(a app.Addrs) {
			_ = os.WriteFile(filepath.Join(dir, "addr.tmp"), []byte(a.Forward), 0o644)
			_ = os.Rename(filepath.Join(dir, "addr.tmp"), filepath.Join(dir, "addr"))
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type child struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(t *testing.T, dir, s3url string) *child {
	t.Helper()
	_ = os.Remove(filepath.Join(dir, "addr"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChildProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), "LOGROUTER_CRASH_DIR="+dir, "S3_ENDPOINT="+s3url)
	cmd.Stderr = io.Discard
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd}
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, "addr"))
		c.addr = string(b)
		return err == nil
	}, 60*time.Second, 20*time.Millisecond)
	return c
}

// sender is a Fluent-Bit-like client: chunks of 500 records, resent after
// a reconnect until acked.
type sender struct {
	mu       sync.Mutex
	acked    map[string]bool // ids
	inflight map[string]bool // ids of chunks sent but not acked when the child died
}

func (s *sender) send(t *testing.T, addr func() string, from, to int, killAfter int, kill func()) {
	const per = 500
	var c net.Conn
	var acks *fwtest.AckReader
	killed := false
	for n := from; n < to; {
		if c == nil {
			var err error
			c, err = net.Dial("tcp", addr())
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			acks = fwtest.NewAckReader(c)
		}
		var es [][]byte
		var ids []string
		for i := n; i < min(n+per, to); i++ {
			id := fmt.Sprintf("id-%06d", i)
			ids = append(ids, id)
			rec := fireLens(fmt.Sprintf(`{"level":"info","id":%q,"msg":"%s"}`, id, strings.Repeat("m", 120)))
			es = append(es, fwtest.Entry(time.Now(), rec, fwtest.FluentBitV2))
		}
		chunk := fmt.Sprintf("chunk-%d", n)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		_, err := c.Write(fwtest.CompressedPackedForward("crash", es, chunk, 1))
		var got string
		if err == nil {
			got, err = acks.Read()
		}
		if err != nil || got != chunk {
			// The logrouter died: this chunk is in flight; resend it.
			s.mu.Lock()
			for _, id := range ids {
				s.inflight[id] = true
			}
			s.mu.Unlock()
			c.Close()
			c = nil
			continue
		}
		s.mu.Lock()
		for _, id := range ids {
			s.acked[id] = true
		}
		s.mu.Unlock()
		n += len(ids)
		if !killed && n >= killAfter {
			killed = true
			// Kill mid-stream: keep sending from another goroutine's view;
			// the next write or ack read fails.
			kill()
		}
	}
	if c != nil {
		c.Close()
	}
}

func TestCrashKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test spawns child processes")
	}
	t.Parallel()
	srv, client := fakeS3(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "logrouter.yml"), []byte(strings.ReplaceAll(crashYAML, "{dir}", dir)), 0o644))

	ch := startChild(t, dir, srv.URL)
	var mu sync.Mutex
	cur := ch
	s := &sender{acked: map[string]bool{}, inflight: map[string]bool{}}
	restarted := make(chan struct{})
	kill := func() {
		mu.Lock()
		old := cur
		mu.Unlock()
		// Keep another chunk in flight while the process dies.
		require.NoError(t, old.cmd.Process.Signal(syscall.SIGKILL))
		_ = old.cmd.Wait()
		go func() {
			nc := startChild(t, dir, srv.URL)
			mu.Lock()
			cur = nc
			mu.Unlock()
			close(restarted)
		}()
	}
	addr := func() string {
		mu.Lock()
		defer mu.Unlock()
		return cur.addr
	}
	var wg sync.WaitGroup
	// Two senders, like two Fluent Bit sidecars; one of them kills the child.
	wg.Add(2)
	go func() { defer wg.Done(); s.send(t, addr, 0, 50000, 20000, kill) }()
	go func() { defer wg.Done(); s.send(t, addr, 50000, 100000, 1<<30, func() {}) }()
	wg.Wait()
	<-restarted
	require.Len(t, s.acked, 100000)

	// SIGTERM: the restarted logrouter drains everything to S3.
	mu.Lock()
	last := cur
	mu.Unlock()
	require.NoError(t, last.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, last.cmd.Wait(), "clean exit after drain")

	ids := s3IDs(t, client)
	missing, dups := 0, 0
	for id := range s.acked {
		switch n := ids[id]; {
		case n == 0:
			missing++
		case n > 1:
			require.True(t, s.inflight[id], "%s duplicated %d times but was never in flight", id, n)
			dups++
		}
	}
	require.Zero(t, missing, "every acked record reaches S3")
	t.Logf("records in S3: %d distinct; duplicates: %d (all from chunks in flight at the kill: %d ids)", len(ids), dups, len(s.inflight))
}
