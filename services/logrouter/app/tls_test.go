package app_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/stretchr/testify/require"

	"github.com/taskyard/taskyard/services/logrouter/internal/forward/fwtest"
)

func selfSigned(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "logrouter"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
}

func TestTLSForwardAndHeartbeats(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	selfSigned(t, dir)
	h := startIn(t, dir, startNATS(t), `
inputs:
  forward:
    listen: 127.0.0.1:0
    tls: {certFile: "{dir}/cert.pem", keyFile: "{dir}/key.pem"}
outputs:
  - name: out
    type: file
    file: {path: "{dir}/out.ndjson"}
spool:
  dir: {dir}/spool
`, nil)
	fl, err := fluent.New(fluent.Config{FluentNetwork: "tls", FluentHost: "127.0.0.1", FluentPort: h.port(), TlsInsecureSkipVerify: true, RequestAck: true, SubSecondPrecision: true, Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.NoError(t, fl.Post("tls", map[string]any{"log": "over tls", "cluster": "c", "service": "s"}))
	require.NoError(t, fl.Close())
	require.Eventually(t, func() bool { return len(lines(t, filepath.Join(dir, "out.ndjson"))) == 1 }, 5*time.Second, 20*time.Millisecond)

	// Plain TCP to a TLS listener is not a forward client.
	c, err := net.Dial("tcp", h.addrs.Forward)
	require.NoError(t, err)
	_, _ = c.Write(fwtest.Message("x", time.Now(), map[string]any{"log": "plain"}, "c"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = fwtest.NewAckReader(c).Read()
	require.Error(t, err)
	c.Close()

	// fluentd's UDP heartbeat on the same port gets 0x00 back.
	u, err := net.Dial("udp", h.addrs.Forward)
	require.NoError(t, err)
	defer u.Close()
	_, err = u.Write([]byte{0})
	require.NoError(t, err)
	_ = u.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 8)
	n, err := u.Read(b)
	require.NoError(t, err)
	require.Equal(t, []byte{0}, b[:n])
}

func TestTCPKeepaliveNil(t *testing.T) {
	t.Parallel()
	h := start(t, fileYAML, nil)
	c, acks := rawConn(t, h.addrs.Forward)
	_, err := c.Write([]byte{0xc0, 0xc0})
	require.NoError(t, err)
	_, err = c.Write(fwtest.Message("x", time.Now(), map[string]any{"log": "after keepalive"}, "k1"))
	require.NoError(t, err)
	id, err := acks.Read()
	require.NoError(t, err)
	require.Equal(t, "k1", id)
}
