package natsconn

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the in-process nats-server of `taskyard dev` and
// of integration tests.
type EmbeddedConfig struct {
	// Listen is host:port; port 0 or -1 picks a free port.
	Listen string
	// StoreDir holds JetStream data; required.
	StoreDir string
	// Logger, when true, routes the server's own logs to stderr.
	Logger bool
}

// StartEmbedded starts a nats-server with JetStream in this process and
// waits until it accepts connections. Call Shutdown on the result.
func StartEmbedded(c EmbeddedConfig) (*server.Server, error) {
	if c.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats: store dir is required")
	}
	host, portStr, err := net.SplitHostPort(c.Listen)
	if c.Listen == "" {
		host, portStr, err = "127.0.0.1", "-1", nil
	}
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: bad port", c.Listen)
	}
	if port == 0 {
		port = -1
	}
	if port > 0 {
		// nats-server only logs a failed listen (and we run it quiet): try
		// the address first so the error says what is wrong.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, portStr))
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		_ = ln.Close()
	}
	opts := &server.Options{
		ServerName: "taskyard-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   c.StoreDir,
		NoSigs:     true,
		NoLog:      !c.Logger,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if c.Logger {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s: not ready after 10s", c.Listen)
	}
	return s, nil
}
