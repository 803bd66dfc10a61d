package app_test

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHTTPNDJSONInput(t *testing.T) {
	t.Parallel()
	h := start(t, `
inputs:
  http: {listen: 127.0.0.1:0}
outputs:
  - name: out
    type: file
    file: {path: "{dir}/out.ndjson"}
  - name: console
    type: stdout
    format: raw
spool:
  dir: {dir}/spool
`, nil)
	body := `{"time":"2026-11-21T10:00:00.5Z","log":"{\"level\":\"info\",\"k\":1}","cluster":"dev","service":"job","container":"main","task":"t1"}
{"log":"second","cluster":"dev","service":"job"}
`
	resp, err := http.Post("http://"+h.addrs.HTTPInput+"/?tag=runner", "application/x-ndjson", strings.NewReader(body))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	out := filepath.Join(h.dir, "out.ndjson")
	require.Eventually(t, func() bool { return len(lines(t, out)) == 2 }, 5*time.Second, 20*time.Millisecond)
	l := lines(t, out)
	require.Equal(t, "2026-11-21T10:00:00.5Z", l[0]["time"])
	require.Equal(t, "info", l[0]["level"])
	require.Equal(t, "runner", l[0]["tag"])
	require.Equal(t, "second", l[1]["log"])
	require.Eventually(t, func() bool { return h.stdout.String() == "{\"level\":\"info\",\"k\":1}\nsecond\n" }, 5*time.Second, 20*time.Millisecond)

	resp, err = http.Post("http://"+h.addrs.HTTPInput+"/", "application/x-ndjson", strings.NewReader("{\"log\":\"ok\"}\nnot json\n"))
	require.NoError(t, err)
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(msg), "line 2")
	require.Equal(t, int64(1), h.metrics()["input"]["http.0"]["protocol_errors"])
	require.Equal(t, int64(2), h.metrics()["input"]["http.0"]["records"])
}
