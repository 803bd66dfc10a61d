// Package forward is the Fluent Forward protocol v1 input: a TCP (or TLS)
// server that accepts Message, Forward, PackedForward and
// CompressedPackedForward frames from Fluent Bit, fluentd, Docker's fluentd
// log driver and fluent-logger clients, performs the HELO/PING/PONG
// shared-key handshake, and answers `chunk` options with {"ack": chunk}
// only after its Handler reports the frame durable.
//
// A connection reads frames in a loop and queues their durability waits to
// a per-connection acker, so a sender may pipeline chunks. When the handler
// blocks (its spool is full) the reader stops reading and TCP pushes back
// on the sender. Any frame the decoder refuses closes that connection with
// a logged reason and a counted ProtocolError; other connections carry on.
package forward

import (
	"context"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// Handler takes decoded frames.
type Handler interface {
	// Accept processes f and returns a function that blocks until the
	// frame's records are durable (or ctx ends). Accept itself may block
	// for backpressure. f and every string in it but Tag and Chunk live
	// in memory reused for the next frame once Accept returns: keep a
	// copy of whatever must outlive the call.
	Accept(ctx context.Context, f *Frame, wireBytes int) (wait func(context.Context) error, err error)
}

// User is a username/password pair for the handshake's user auth.
type User struct{ Name, Password string }

// Config configures a Server.
type Config struct {
	// SharedKey enables the HELO/PING/PONG handshake.
	SharedKey string
	// Users, when set with SharedKey, also require a username and password.
	Users []User
	// Hostname is the server's self_hostname in PONG.
	Hostname string
	// TLS, when set, wraps every connection.
	TLS *tls.Config
	// MaxFrameBytes bounds one message on the wire (default 16 MiB).
	MaxFrameBytes int
	// MaxDecompressed bounds a decompressed payload (default 4× MaxFrameBytes).
	MaxDecompressed int
	// MemoryLimit bounds the bytes of frames being processed at once across
	// all connections (default 64 MiB; at least MaxFrameBytes). Wire bytes are counted.
	MemoryLimit int64
	// IdleTimeout closes a connection silent for this long (default 5 min).
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the handshake (default 10 s).
	HandshakeTimeout time.Duration
	// MaxPendingAcks per connection before the reader waits (default 64).
	MaxPendingAcks int
	// OnProtocolError is called with a reason label for every connection
	// closed because of bad input (malformed, wrong_type, bad_gzip,
	// oversize, auth_failed, ...).
	OnProtocolError func(reason string)
	Log             *slog.Logger
}

// Server serves the Forward protocol on a listener.
type Server struct {
	c   Config
	h   Handler
	log *slog.Logger
	mem *semaphore.Weighted

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewServer returns a server handing frames to h.
func NewServer(c Config, h Handler) *Server {
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 16 << 20
	}
	if c.MaxDecompressed <= 0 {
		c.MaxDecompressed = 4 * c.MaxFrameBytes
	}
	if c.MemoryLimit <= 0 {
		c.MemoryLimit = 64 << 20
	}
	if c.MemoryLimit < int64(c.MaxFrameBytes) {
		c.MemoryLimit = int64(c.MaxFrameBytes)
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.MaxPendingAcks <= 0 {
		c.MaxPendingAcks = 64
	}
	if c.Hostname == "" {
		c.Hostname = "taskyard-logrouter"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.OnProtocolError == nil {
		c.OnProtocolError = func(string) {}
	}
	return &Server{c: c, h: h, log: c.Log, mem: semaphore.NewWeighted(c.MemoryLimit), conns: map[net.Conn]struct{}{}}
}

// Serve accepts connections on ln until ctx ends. Then it closes the
// listener, stops reading, waits up to drain for pending acks, and closes
// every connection.
func (s *Server) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	if s.c.TLS != nil {
		ln = tls.NewListener(ln, s.c.TLS)
	}
	s.log.Info("forward input listening", "addr", ln.Addr().String(), "tls", s.c.TLS != nil, "auth", s.c.SharedKey != "")
	var wg sync.WaitGroup
	connCtx, cancelConns := context.WithCancel(context.Background())
	defer cancelConns()
	stopReading := make(chan struct{})
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			break
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(connCtx, c, stopReading)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
	// Stop reading new frames; acks of frames already taken still go out.
	close(stopReading)
	s.mu.Lock()
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		cancelConns()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
	}
	return err
}

type ackJob struct {
	chunk string
	wait  func(context.Context) error
}

func (s *Server) serveConn(ctx context.Context, c net.Conn, stopReading <-chan struct{}) {
	remote := c.RemoteAddr().String()
	log := s.log.With("remote", remote)
	defer c.Close()
	if s.c.SharedKey != "" {
		if err := s.handshake(c); err != nil {
			s.reject(log, err)
			return
		}
	}
	acks := make(chan ackJob, s.c.MaxPendingAcks)
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		s.acker(ctx, c, acks, log)
	}()
	err := s.readLoop(ctx, c, acks, stopReading)
	close(acks)
	<-ackerDone
	if err != nil {
		s.reject(log, err)
	}
}

func (s *Server) reject(log *slog.Logger, err error) {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		s.c.OnProtocolError(pe.Reason)
		log.Warn("forward connection closed: bad input", "reason", pe.Reason, "err", pe.Err)
		return
	}
	log.Debug("forward connection closed", "err", err)
}

func (s *Server) readLoop(ctx context.Context, c net.Conn, acks chan<- ackJob, stopReading <-chan struct{}) error {
	buf := make([]byte, 0, 64<<10)
	start := 0 // first unconsumed byte
	for {
		// Frames already complete in buf.
		for start < len(buf) {
			n, err := objLen(buf[start:])
			if errors.Is(err, errShort) {
				if len(buf)-start > s.c.MaxFrameBytes {
					return perr("oversize", "message larger than %d bytes", s.c.MaxFrameBytes)
				}
				break
			}
			if err != nil {
				return malformed(err)
			}
			if n > s.c.MaxFrameBytes {
				return perr("oversize", "message of %d bytes is larger than %d", n, s.c.MaxFrameBytes)
			}
			// A lone nil is a keepalive ("transport" heartbeat): skip it.
			if n != 1 || buf[start] != 0xc0 {
				if err := s.frame(ctx, buf[start:start+n], acks); err != nil {
					return err
				}
			}
			start += n
		}
		select {
		case <-stopReading:
			return nil
		default:
		}
		// Compact and grow.
		if start > 0 {
			m := copy(buf, buf[start:])
			buf = buf[:m]
			start = 0
			if cap(buf) > 1<<20 && m < 64<<10 {
				buf = append(make([]byte, 0, 64<<10), buf...)
			}
		}
		if cap(buf)-len(buf) < 16<<10 {
			nb := make([]byte, len(buf), 2*cap(buf))
			copy(nb, buf)
			buf = nb
		}
		_ = c.SetReadDeadline(time.Now().Add(s.c.IdleTimeout))
		select {
		case <-stopReading: // closed between the check above and the deadline
			return nil
		default:
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			if n > 0 {
				continue
			}
			if errors.Is(err, io.EOF) {
				if len(buf) > 0 {
					return perr("malformed", "connection closed inside a message (%d bytes pending)", len(buf))
				}
				return nil
			}
			select {
			case <-stopReading:
				return nil
			default:
			}
			return err
		}
	}
}

// bufPool holds decode buffers between frames (per server goroutine
// would keep ~1 MB per idle connection; a pool shares them).
var bufPool = sync.Pool{New: func() any { return new(Buffers) }}

func (s *Server) frame(ctx context.Context, raw []byte, acks chan<- ackJob) error {
	w := int64(len(raw))
	if err := s.mem.Acquire(ctx, w); err != nil {
		return err
	}
	bf := bufPool.Get().(*Buffers)
	defer func() {
		bf.Reset()
		bufPool.Put(bf)
	}()
	f, err := DecodeFrameInto(raw, Limits{MaxDecompressed: s.c.MaxDecompressed}, bf)
	if err != nil {
		s.mem.Release(w)
		return err
	}
	wait, err := s.h.Accept(ctx, f, len(raw))
	s.mem.Release(w)
	if err != nil {
		return err
	}
	if chunk := f.Chunk; chunk != "" {
		select {
		case acks <- ackJob{chunk: chunk, wait: wait}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *Server) acker(ctx context.Context, c net.Conn, acks <-chan ackJob, log *slog.Logger) {
	var out []byte
	failed := false
	for j := range acks {
		if failed {
			continue
		}
		if err := j.wait(ctx); err != nil {
			// Not durable: no ack; the sender resends the chunk.
			log.Warn("forward chunk not acknowledged", "chunk", j.chunk, "err", err)
			failed = true
			c.Close()
			continue
		}
		out = appendAck(out[:0], j.chunk)
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(out); err != nil {
			failed = true
			c.Close()
		}
	}
}

// ServeHeartbeat answers fluentd's UDP heartbeats (heartbeat_type udp)
// on pc with the one-byte response 0x00 until ctx ends.
func (s *Server) ServeHeartbeat(ctx context.Context, pc net.PacketConn) error {
	go func() {
		<-ctx.Done()
		pc.Close()
	}()
	buf := make([]byte, 512)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("heartbeat: %w", err)
		}
		_, _ = pc.WriteTo([]byte{0}, addr)
	}
}

// appendAck encodes {"ack": chunk}.
func appendAck(b []byte, chunk string) []byte {
	b = append(b, 0x81, 0xa3, 'a', 'c', 'k')
	return appendStr(b, chunk)
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	case n < 65536:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

// handshake runs HELO → PING → PONG.
func (s *Server) handshake(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(s.c.HandshakeTimeout))
	defer c.SetDeadline(time.Time{})
	nonce := make([]byte, 16)
	authSalt := make([]byte, 16)
	_, _ = rand.Read(nonce)
	if len(s.c.Users) > 0 {
		_, _ = rand.Read(authSalt)
	} else {
		authSalt = authSalt[:0]
	}
	// ["HELO", {"nonce": nonce, "auth": salt, "keepalive": true}]
	helo := []byte{0x92, 0xa4, 'H', 'E', 'L', 'O', 0x83}
	helo = appendStr(helo, "nonce")
	helo = appendBin(helo, nonce)
	helo = appendStr(helo, "auth")
	helo = appendBin(helo, authSalt)
	helo = appendStr(helo, "keepalive")
	helo = append(helo, 0xc3)
	if _, err := c.Write(helo); err != nil {
		return fmt.Errorf("send HELO: %w", err)
	}
	raw, err := readOne(c, 64<<10)
	if err != nil {
		return err
	}
	r := &reader{b: raw}
	n, err := r.arrayLen()
	if err != nil || n != 6 {
		return perr("auth_failed", "want PING [\"PING\", hostname, salt, digest, username, password digest]")
	}
	var f [6]string
	for i := range f {
		b, err := r.bytes()
		if err != nil {
			return perr("auth_failed", "PING element %d: %v", i, err)
		}
		f[i] = string(b)
	}
	if f[0] != "PING" {
		return perr("auth_failed", "want PING, got %q", f[0])
	}
	hostname, salt, digest, user, passDigest := f[1], f[2], f[3], f[4], f[5]
	ok, reason := true, ""
	want := sha512hex(salt, hostname, string(nonce), s.c.SharedKey)
	if subtle.ConstantTimeCompare([]byte(want), []byte(digest)) != 1 {
		ok, reason = false, "shared_key mismatch"
	} else if len(s.c.Users) > 0 {
		ok, reason = false, "username/password mismatch"
		for _, u := range s.c.Users {
			if u.Name == user && subtle.ConstantTimeCompare([]byte(sha512hex(string(authSalt), u.Name, u.Password)), []byte(passDigest)) == 1 {
				ok, reason = true, ""
			}
		}
	}
	// ["PONG", ok, reason, self_hostname, digest]
	pong := []byte{0x95, 0xa4, 'P', 'O', 'N', 'G'}
	if ok {
		pong = append(pong, 0xc3)
	} else {
		pong = append(pong, 0xc2)
	}
	pong = appendStr(pong, reason)
	pong = appendStr(pong, s.c.Hostname)
	if ok {
		pong = appendStr(pong, sha512hex(salt, s.c.Hostname, string(nonce), s.c.SharedKey))
	} else {
		pong = appendStr(pong, "")
	}
	if _, err := c.Write(pong); err != nil {
		return fmt.Errorf("send PONG: %w", err)
	}
	if !ok {
		return perr("auth_failed", "%s (client %q, user %q)", reason, hostname, user)
	}
	return nil
}

func appendBin(b, v []byte) []byte {
	if len(v) < 256 {
		b = append(b, 0xc4, byte(len(v)))
	} else {
		b = append(b, 0xc5, byte(len(v)>>8), byte(len(v)))
	}
	return append(b, v...)
}

func sha512hex(parts ...string) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// readOne reads exactly one MessagePack object, byte by byte, so nothing
// the client sends after the PING is consumed (the handshake is short).
func readOne(r io.Reader, max int) ([]byte, error) {
	var buf []byte
	one := make([]byte, 1)
	for {
		if _, err := io.ReadFull(r, one); err != nil {
			return nil, fmt.Errorf("read PING: %w", err)
		}
		buf = append(buf, one[0])
		n, err := objLen(buf)
		if err == nil && n == len(buf) {
			return buf, nil
		}
		if err != nil && !errors.Is(err, errShort) {
			return nil, perr("auth_failed", "PING is not valid MessagePack: %v", err)
		}
		if len(buf) > max {
			return nil, perr("auth_failed", "PING larger than %d bytes", max)
		}
	}
}
