// Package natsconn connects taskyard daemons to NATS: the client connection
// (URL list, creds file, TLS, reconnect forever with every connection event
// logged), JetStream, an embedded nats-server for dev mode and tests, and
// the idempotent creation of taskyard's streams and KV buckets from the one
// definition in proto/.
package natsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/config"
)

// Config is how a daemon reaches NATS.
type Config struct {
	// URL is one or more comma-separated server URLs.
	URL string
	// Creds is a NATS credentials file (JWT + NKey seed).
	Creds string
	// TLSCA, TLSCert and TLSKey configure TLS; CA alone verifies the server,
	// cert+key add a client certificate.
	TLSCA, TLSCert, TLSKey string
	// Prefix is the first token of every taskyard subject.
	Prefix string
	// Replicas of the streams and buckets this daemon creates.
	Replicas int
}

// Register binds the NATS flags (nats-url, nats-creds, nats-tls-*,
// subject-prefix, nats-replicas) with their TASKYARD_* variables.
func (c *Config) Register(f *config.Flags) {
	f.String(&c.URL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	f.String(&c.Creds, "nats-creds", "", "NATS credentials file")
	f.String(&c.TLSCA, "nats-tls-ca", "", "CA certificate (PEM) that verifies the NATS server")
	f.String(&c.TLSCert, "nats-tls-cert", "", "client certificate (PEM) for NATS")
	f.String(&c.TLSKey, "nats-tls-key", "", "client key (PEM) for NATS")
	f.String(&c.Prefix, "subject-prefix", v1.DefaultPrefix, "first token of every taskyard subject, and of stream and bucket names")
	f.Int(&c.Replicas, "nats-replicas", 1, "replicas of the JetStream streams and buckets this daemon creates (3 on a JetStream cluster)")
}

// Validate appends the config's problems to p.
func (c *Config) Validate(p *config.Problems) {
	p.Check(c.URL != "", "nats-url: must not be empty")
	p.Check((c.TLSCert == "") == (c.TLSKey == ""), "nats-tls-cert and nats-tls-key: give both or neither")
	p.Check(c.Replicas >= 1 && c.Replicas <= 5, "nats-replicas: %d is not between 1 and 5", c.Replicas)
	p.Check(c.Prefix != "" && v1.ValidName(c.Prefix), "subject-prefix: %q must be a valid name (letters, digits, '_' and '-')", c.Prefix)
	for _, f := range []struct{ flag, path string }{{"nats-creds", c.Creds}, {"nats-tls-ca", c.TLSCA}, {"nats-tls-cert", c.TLSCert}, {"nats-tls-key", c.TLSKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			p.Addf("%s: %v", f.flag, err)
		}
	}
}

// StoreOptions is the stream/bucket definition this config selects.
func (c *Config) StoreOptions() v1.StoreOptions {
	return v1.StoreOptions{Prefix: c.Prefix, Replicas: c.Replicas}
}

// Connect dials NATS. It retries the first connection too (RetryOnFailedConnect)
// and reconnects forever; ctx bounds only the wait for the first connection.
func Connect(ctx context.Context, c Config, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(10 * time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("nats connected", "url", nc.ConnectedUrlRedacted()) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ClosedHandler(func(*nats.Conn) { log.Info("nats connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.TLSCA != "" || c.TLSCert != "" {
		tc, err := tlsConfig(c)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", c.URL, err)
	}
	// With RetryOnFailedConnect, Connect returns before the first connection;
	// wait for it so callers can create streams right away.
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("connect to nats %s: %w", c.URL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nc, nil
}

func tlsConfig(c Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("read nats-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("nats-tls-ca %s: no PEM certificate found", c.TLSCA)
		}
		tc.RootCAs = pool
	}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load nats client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Ensure creates every taskyard stream and KV bucket that does not exist yet
// and brings the streams up to their definition. It is safe for every daemon
// replica to call at start, concurrently.
//
// Existing buckets are left as they are, with one exception: when
// o.LeaseTTL is set (the scheduler sets it from --lease-ttl), the leases
// bucket's TTL is made equal to it, because the leader election is only
// safe when the bucket expires a lease exactly when its holder stops
// leading. Other daemons leave LeaseTTL zero and so never change it.
func Ensure(ctx context.Context, js jetstream.JetStream, o v1.StoreOptions) error {
	for _, sc := range v1.StreamConfigs(o) {
		if err := retryRace(func() error { _, err := js.CreateOrUpdateStream(ctx, sc); return err }); err != nil {
			return fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
	}
	leases := v1.Buckets(o.Prefix).Leases
	for _, kc := range v1.KVConfigs(o) {
		enforce := kc.Bucket == leases && o.LeaseTTL > 0
		err := retryRace(func() error {
			kv, err := js.KeyValue(ctx, kc.Bucket)
			switch {
			case errors.Is(err, jetstream.ErrBucketNotFound):
				_, err = js.CreateKeyValue(ctx, kc)
				return err
			case err != nil:
				return err
			case !enforce:
				return nil
			}
			st, err := kv.Status(ctx)
			if err != nil {
				return err
			}
			if st.TTL() == kc.TTL {
				return nil
			}
			_, err = js.UpdateKeyValue(ctx, kc)
			return err
		})
		if err != nil {
			return fmt.Errorf("create kv bucket %s: %w", kc.Bucket, err)
		}
	}
	return nil
}

// retryRace retries f a few times when it lost a creation race against
// another replica (the server then reports the name as already in use).
func retryRace(f func() error) error {
	var err error
	for range 5 {
		err = f()
		if err == nil || !(errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || errors.Is(err, jetstream.ErrBucketExists)) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
