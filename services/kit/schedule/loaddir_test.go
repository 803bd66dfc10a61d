package schedule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLoadProfileDir(t *testing.T) {
	t.Parallel()
	got, err := LoadProfileDir("testdata/good/clusters")
	require.NoError(t, err)
	require.NotEmpty(t, got)
	for name, p := range got {
		require.Equal(t, name, p.Name)
	}

	empty, err := LoadProfileDir("")
	require.NoError(t, err)
	require.Empty(t, empty)

	// Any directory name works; every broken file and duplicate is reported.
	dir := filepath.Join(t.TempDir(), "profiles")
	require.NoError(t, os.Mkdir(dir, 0o755))
	good := "name: batch\ncluster: batch\nlaunchType: EC2\nnetworkMode: bridge\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.yml"), []byte(good), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.yaml"), []byte(good), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c.yml"), []byte("name: x\ncluster: x\nlaunchType: MOON\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not yaml"), 0o644))
	_, err = LoadProfileDir(dir)
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, `b.yaml:1:7: name: duplicate cluster profile name "batch" (also `)
	require.Contains(t, msg, "c.yml:3:13: launchType:")
	require.Equal(t, 2, strings.Count(msg, "\n")+1, msg)

	_, err = LoadProfileDir(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "missing")
}
