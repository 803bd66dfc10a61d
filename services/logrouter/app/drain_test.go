package app_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/logrouter/app"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// On shutdown, S3 groups that are far from their size or age are uploaded
// within the drain timeout, and nothing is left spooled.
func TestDrainUploadsOpenS3Groups(t *testing.T) {
	t.Parallel()
	s3srv, client := fakeS3(t)
	dir := t.TempDir()
	yaml := fmt.Sprintf(`
inputs:
  forward: {listen: 127.0.0.1:0}
outputs:
  - name: archive
    type: s3
    s3: {bucket: logs, endpoint: %q, forcePathStyle: true, region: us-east-1, flushAge: 1h}
  - name: small
    type: file
    spoolMaxBytes: 64KiB
    file: {path: %q}
spool:
  dir: %s/spool
`, s3srv.URL, filepath.Join(dir, "out.ndjson"), dir)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lr.yml"), []byte(yaml), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan app.Addrs, 1)
	done := make(chan error, 1)
	ac := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	go func() {
		done <- app.Run(ctx, app.Config{ConfigFile: filepath.Join(dir, "lr.yml"), Instance: "d", HTTPListen: "127.0.0.1:0", DrainTimeout: 10 * time.Second, StatsInterval: time.Second, NoNATS: true},
			app.Deps{Log: logging.New(io.Discard, 0, "logrouter"), AWS: &ac, Ready: func(a app.Addrs) { ready <- a }})
	}()
	addrs := <-ready
	c, acks := rawConn(t, addrs.Forward)
	// One frame of ~300 KB: larger than the 64 KiB spool of "small", which
	// takes it in pieces.
	var es [][]byte
	for i := 0; i < 1000; i++ {
		es = append(es, fwtest.Entry(time.Now(), fireLens(fmt.Sprintf(`{"id":"d-%d","pad":"%0200d"}`, i, i)), fwtest.EventTimeFix))
	}
	_, err := c.Write(fwtest.PackedForward("d", es, "one", true))
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	id, err := acks.Read()
	require.NoError(t, err)
	require.Equal(t, "one", id)
	require.Empty(t, s3IDs(t, client), "flushAge 1h: nothing uploaded yet")

	cancel()
	require.NoError(t, <-done)
	require.Len(t, s3IDs(t, client), 1000, "the drain uploaded the open group")
	require.Len(t, lines(t, filepath.Join(dir, "out.ndjson")), 1000)
	for _, o := range []string{"archive", "small"} {
		sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool", o)})
		require.NoError(t, err)
		require.True(t, sp.Empty(), "%s: nothing left spooled", o)
		require.Zero(t, sp.Bytes())
		require.NoError(t, sp.Close())
	}
}
