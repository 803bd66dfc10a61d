// Command nats-server is a NATS server with JetStream built from the
// github.com/nats-io/nats-server/v2 Go module, for machines where no
// nats image can be pulled (docker-compose.yml's local build). Its
// monitoring port serves /healthz (JetStream included).
//
//	nats-server [-addr :4222] [-http :8222] [-store /data] [-name taskyard]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nats-server:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", ":4222", "client listen address")
	httpAddr := flag.String("http", ":8222", "monitoring listen address (/healthz, /varz, /jsz); empty: off")
	store := flag.String("store", "/data", "JetStream storage directory")
	name := flag.String("name", "taskyard", "server name")
	debug := flag.Bool("debug", false, "debug logging")
	flag.Parse()

	host, port, err := splitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("addr: %w", err)
	}
	opts := &server.Options{
		ServerName: *name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   *store,
		Debug:      *debug,
		NoSigs:     true,
	}
	if *httpAddr != "" {
		h, p, err := splitHostPort(*httpAddr)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		opts.HTTPHost, opts.HTTPPort = h, p
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	s.ConfigureLogger()
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("not ready for connections after 30s")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

func splitHostPort(a string) (string, int, error) {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, n, nil
}
