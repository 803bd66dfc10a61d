package s3out

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// TestUploadLogTornLine: a line cut by a crash is ignored (and dropped
// when the file is rewritten at open); the lines before it count.
func TestUploadLogTornLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s3-uploads.ndjson")
	require.NoError(t, os.WriteFile(path, []byte("{\"k\":\"b/\\u0000.gz\",\"f\":[1,200],\"l\":[1,300]}\n{\"k\":\"a/\\u0000.gz\",\"f\":[1,1"), 0o644))
	l, err := openUploadLog(path)
	require.NoError(t, err)
	defer l.close()
	require.True(t, l.uploaded("b/\x00.gz", spool.Pos{Seg: 1, Off: 250}))
	require.False(t, l.uploaded("b/\x00.gz", spool.Pos{Seg: 1, Off: 301}))
	require.False(t, l.uploaded("a/\x00.gz", spool.Pos{Seg: 1, Off: 100}))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "{\"k\":\"b/\\u0000.gz\",\"f\":[1,200],\"l\":[1,300]}\n", string(b))

	// Committed past the upload: forgotten, the file emptied.
	require.NoError(t, l.prune(spool.Pos{Seg: 1, Off: 400}))
	require.False(t, l.uploaded("b/\x00.gz", spool.Pos{Seg: 1, Off: 250}))
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Empty(t, b)
}
