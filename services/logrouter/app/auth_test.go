package app_test

import (
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

const authYAML = `
inputs:
  forward:
    listen: 127.0.0.1:0
    sharedKey: ${FLUENT_SHARED_KEY}
    users:
      - username: fluentbit
        password: ${FLUENT_PASSWORD:-default-pass}
outputs:
  - name: archive
    type: file
    file: {path: "{dir}/out/logs.ndjson"}
spool:
  dir: {dir}/spool
`

func TestSharedKeyHandshake(t *testing.T) {
	t.Parallel()
	h := start(t, authYAML, map[string]string{"FLUENT_SHARED_KEY": "s3cret"})
	for _, tc := range []struct {
		name, key, user, pass string
		ok                    bool
	}{
		{"right key and password", "s3cret", "fluentbit", "default-pass", true},
		{"wrong shared key", "nope", "fluentbit", "default-pass", false},
		{"wrong password", "s3cret", "fluentbit", "wrong", false},
		{"unknown user", "s3cret", "mallory", "default-pass", false},
	} {
		c, err := net.Dial("tcp", h.addrs.Forward)
		require.NoError(t, err)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		ok, reason, err := fwtest.Handshake(c, tc.key, "client-host", tc.user, tc.pass)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.ok, ok, "%s: %s", tc.name, reason)
		if ok {
			_, err = c.Write(fwtest.Message("auth", time.Now(), map[string]any{"log": "authenticated " + tc.name}, "c1"))
			require.NoError(t, err)
			id, err := fwtest.NewAckReader(c).Read()
			require.NoError(t, err)
			require.Equal(t, "c1", id)
		} else {
			require.NotEmpty(t, reason)
			_, err = c.Read(make([]byte, 1))
			require.ErrorIs(t, err, io.EOF, "%s: connection closed after a failed handshake", tc.name)
		}
		c.Close()
	}
	require.Eventually(t, func() bool {
		return h.metrics()["input"]["forward.0"]["protocol_errors_auth_failed"] == 3
	}, 5*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return len(lines(t, filepath.Join(h.dir, "out", "logs.ndjson"))) == 1 }, 5*time.Second, 20*time.Millisecond)

	// Without a handshake, frames are not accepted.
	c, err := net.Dial("tcp", h.addrs.Forward)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write(fwtest.Message("auth", time.Now(), map[string]any{"log": "sneaky"}, "c2"))
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(c)
	require.NoError(t, err) // server sent HELO, then closed on the bad PING
	require.Eventually(t, func() bool {
		return h.metrics()["input"]["forward.0"]["protocol_errors_auth_failed"] == 4
	}, 5*time.Second, 20*time.Millisecond)
}
