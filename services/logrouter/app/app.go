// Package app is the logrouter daemon: Config (flags and TASKYARD_*
// variables), Deps and Run. cmd/taskyard-logrouter and `taskyard dev` both
// call Run.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/kit/config"
	"github.com/taskyard/taskyard/services/kit/health"
	"github.com/taskyard/taskyard/services/kit/natsconn"
	"github.com/taskyard/taskyard/services/kit/telemetry"
	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/forward"
	"github.com/taskyard/taskyard/services/logrouter/internal/ingest"
	"github.com/taskyard/taskyard/services/logrouter/internal/lrconfig"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/route"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
	"github.com/taskyard/taskyard/services/logrouter/internal/stats"
	"github.com/taskyard/taskyard/services/logrouter/internal/tail"
)

// Config is the daemon's configuration: flags here, routing in the YAML
// file named by ConfigFile (or given directly as Routing).
type Config struct {
	NATS natsconn.Config
	// ConfigFile is the YAML file with inputs, pipeline, routes, outputs
	// and spool.
	ConfigFile string
	// Routing, when set, is used instead of reading ConfigFile (dev mode).
	Routing *lrconfig.File
	// Instance names this logrouter in stats subjects (default: host name).
	Instance string
	// HTTPListen serves /healthz, /readyz, /metrics, /api/v1/metrics and
	// /api/v1/health.
	HTTPListen string
	// DrainTimeout bounds the SIGTERM drain (stays under ECS's 30 s).
	DrainTimeout time.Duration
	// StatsInterval is the LogStats / DaemonStats period.
	StatsInterval time.Duration
	// NoNATS runs without NATS (no stats publishing, no live tail).
	NoNATS bool
	// OutputNice, when above 0, lowers the CPU priority of every output's
	// delivery thread by that many nice steps (Linux; see
	// docs/logrouting.md "CPU priority"). The daemon's flag defaults to
	// DefaultOutputNice; 0, the zero value, leaves priorities alone.
	OutputNice int
}

// DefaultOutputNice is --output-nice's default: under CPU contention an
// output's thread then gets about a tenth of what an input's gets (the
// kernel's weights for nice 10 and 0 are 110 and 1024).
const DefaultOutputNice = 10

// Register binds the flags.
func (c *Config) Register(f *config.Flags) {
	c.NATS.Register(f)
	f.String(&c.ConfigFile, "config", "/etc/taskyard/logrouter.yml", "logrouter YAML configuration: inputs, pipeline, routes, outputs, spool (see docs/logrouting.md)")
	f.String(&c.Instance, "instance", "", "instance name in taskyard.stats.logrouter.<instance> (default: host name)")
	f.String(&c.HTTPListen, "http-listen", ":2021", "HTTP address of /healthz, /readyz, /metrics, /api/v1/metrics, /api/v1/health")
	f.Duration(&c.DrainTimeout, "drain-timeout", 25*time.Second, "on SIGTERM, time to flush spooled records before exiting (keep under the ECS stop timeout)")
	f.Duration(&c.StatsInterval, "stats-interval", 10*time.Second, "period of LogStats and DaemonStats publications")
	f.Bool(&c.NoNATS, "no-nats", false, "run without NATS: no stats publications, no live tail")
	f.Int(&c.OutputNice, "output-nice", DefaultOutputNice, "raise the nice value of the outputs' delivery threads by this much (0-19; 0: same priority as the inputs), so a burst is acknowledged first and delivered with the CPU left (Linux)")
}

// Validate reports every problem at once, including the config file's.
func (c Config) Validate() error {
	var p config.Problems
	if !c.NoNATS {
		c.NATS.Validate(&p)
	}
	p.Check(c.DrainTimeout > 0, "drain-timeout: must be positive")
	p.Check(c.StatsInterval >= time.Second, "stats-interval: must be at least 1s")
	p.Check(c.HTTPListen != "", "http-listen: must not be empty")
	p.Check(c.OutputNice >= 0 && c.OutputNice <= 19, "output-nice: %d is not between 0 and 19", c.OutputNice)
	if c.Routing == nil {
		if _, err := lrconfig.Load(c.ConfigFile, nil); err != nil {
			p.Addf("config: %v", err)
		}
	}
	return p.Err()
}

// Addrs are the bound listen addresses, reported to Deps.Ready.
type Addrs struct{ Forward, HTTP, HTTPInput string }

// Deps are what Run needs from its caller.
type Deps struct {
	Log       *slog.Logger
	Telemetry *telemetry.Telemetry
	// NC is used when set; otherwise Run connects from Config.NATS.
	NC *nats.Conn
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Stdout receives the stdout output (os.Stdout when nil).
	Stdout io.Writer
	// Env reads ${VAR} substitutions of the config file (os.LookupEnv when nil).
	Env func(string) (string, bool)
	// Ready, when set, is called once every listener is bound.
	Ready func(Addrs)
	// AWS, when set, is the base AWS configuration of the s3 and firehose
	// outputs (credentials, retryer); otherwise the SDK default chain.
	AWS *aws.Config
}

type outputRT struct {
	cfg      lrconfig.Output
	spool    *spool.Spool
	counters *output.Counters
	runner   *output.Runner
}

// Run runs the logrouter until ctx is cancelled, then drains: it stops
// accepting, acknowledges what is durable, flushes outputs for at most
// DrainTimeout and leaves the rest spooled.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	stdout := deps.Stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	tel := deps.Telemetry
	if tel == nil {
		tel = telemetry.Noop()
	}
	if cfg.Instance == "" {
		cfg.Instance, _ = os.Hostname()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 25 * time.Second
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 10 * time.Second
	}
	fc := cfg.Routing
	if fc == nil {
		var err error
		if fc, err = lrconfig.Load(cfg.ConfigFile, deps.Env); err != nil {
			return err
		}
	}
	fc.Defaults()
	if len(fc.Outputs) > 64 {
		return errors.New("at most 64 outputs")
	}
	startedAt := now()

	nc := deps.NC
	var js jetstream.JetStream
	if nc == nil && !cfg.NoNATS {
		var err error
		nc, err = natsconn.Connect(ctx, cfg.NATS, "taskyard-logrouter", log)
		if err != nil {
			return err
		}
		defer nc.Close()
	}
	if nc != nil {
		var err error
		if js, err = jetstream.New(nc); err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = natsconn.Ensure(ectx, js, cfg.NATS.StoreOptions())
		cancel()
		if err != nil {
			return err
		}
	}

	// Outputs: spool + sink + runner each.
	outs := make([]*outputRT, 0, len(fc.Outputs))
	defer func() {
		for _, o := range outs {
			_ = o.spool.Close()
		}
	}()
	index := map[string]int{}
	for i, oc := range fc.Outputs {
		sp, err := spool.Open(spool.Options{
			Dir:          filepath.Join(fc.Spool.Dir, oc.Name),
			MaxBytes:     int64(oc.SpoolMaxBytes),
			SegmentBytes: int64(fc.Spool.SegmentBytes),
			DropWhenFull: oc.WhenFull == "drop_newest",
			Now:          now,
			Log:          log,
		})
		if err != nil {
			return fmt.Errorf("output %s: %w", oc.Name, err)
		}
		rt := &outputRT{cfg: oc, spool: sp, counters: &output.Counters{}}
		outs = append(outs, rt)
		index[oc.Name] = i
		sink, batchRecs, batchBytes, err := buildSink(ctx, oc, fc, rt.counters, stdout, sinkDeps{aws: deps.AWS, spoolID: sp.ID(), spoolDir: filepath.Join(fc.Spool.Dir, oc.Name), now: now, log: log})
		if err != nil {
			return fmt.Errorf("output %s: %w", oc.Name, err)
		}
		rt.runner = &output.Runner{
			Name: oc.Name, Sink: sink, Spool: sp, Counters: rt.counters,
			Retry:           output.RetryPolicy{Initial: time.Duration(oc.Retry.Initial), Max: time.Duration(oc.Retry.Max), Limit: oc.Retry.Limit},
			MaxBatchRecords: batchRecs, MaxBatchBytes: batchBytes,
			DrainTimeout: cfg.DrainTimeout,
			DeadLetter:   &output.DeadLetter{Path: filepath.Join(fc.Spool.Dir, oc.Name+".deadletter.ndjson")},
			Nice:         cfg.OutputNice,
			Log:          log,
		}
		if oc.S3 != nil {
			rt.runner.Tick = time.Second
		}
	}

	table := &route.Table{NOutputs: len(outs)}
	for _, r := range fc.Routes {
		rr := route.Route{Cluster: r.Match.Cluster, Service: r.Match.Service, Container: r.Match.Container, Level: r.Match.Level}
		for _, n := range r.Outputs {
			rr.Outputs = append(rr.Outputs, index[n])
		}
		table.Routes = append(table.Routes, rr)
	}
	pc := pipeline.Config{
		DropNonJSON:    fc.Pipeline.OnlyJSON == "drop",
		MaxRecordBytes: int(fc.Pipeline.MaxRecordBytes),
		DefaultCluster: fc.Pipeline.DefaultCluster,
		DefaultService: fc.Pipeline.DefaultService,
	}
	for _, r := range fc.Pipeline.Redact {
		pc.Redact = append(pc.Redact, pipeline.Redaction{Pattern: regexp.MustCompile(r.Pattern), Mask: r.Mask})
	}
	var tails *tail.Registry
	if nc != nil {
		tails = tail.New(now, nc.Publish)
	}
	in := &ingest.Ingest{
		Pipeline: pipeline.New(pc),
		Routes:   table,
		Window:   stats.NewWindow(now()),
		Tail:     tails,
	}
	for _, o := range outs {
		in.Outputs = append(in.Outputs, &ingest.Output{Name: o.cfg.Name, Spool: o.spool, Counters: o.counters})
	}
	fwCounters, httpCounters := &ingest.InputCounters{}, &ingest.InputCounters{}

	m := &metrics{startedAt: startedAt, now: now, in: in, outs: outs, fw: fwCounters, http: httpCounters,
		hasFW: fc.Inputs.Forward != nil, hasHTTP: fc.Inputs.HTTP != nil}
	if err := m.register(tel); err != nil {
		return err
	}

	// Listeners.
	var addrs Addrs
	var fwLn, httpInLn net.Listener
	var fwSrv *forward.Server
	var hbConn net.PacketConn
	if f := fc.Inputs.Forward; f != nil {
		var tc *tls.Config
		if f.TLS != nil {
			cert, err := tls.LoadX509KeyPair(f.TLS.CertFile, f.TLS.KeyFile)
			if err != nil {
				return fmt.Errorf("inputs.forward.tls: %w", err)
			}
			tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		users := make([]forward.User, 0, len(f.Users))
		for _, u := range f.Users {
			users = append(users, forward.User{Name: u.Username, Password: u.Password})
		}
		host := f.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		fwSrv = forward.NewServer(forward.Config{
			SharedKey: f.SharedKey, Users: users, Hostname: host, TLS: tc,
			MaxFrameBytes: int(f.MaxFrameBytes), MemoryLimit: int64(f.MemoryLimit), IdleTimeout: time.Duration(f.IdleTimeout),
			OnProtocolError: func(reason string) {
				fwCounters.ProtocolErrors.Add(1)
				m.protocolError(reason)
			},
			Log: log,
		}, in.Forward(fwCounters))
		ln, err := net.Listen("tcp", f.Listen)
		if err != nil {
			return fmt.Errorf("forward listen %s: %w", f.Listen, err)
		}
		fwLn = ln
		addrs.Forward = ln.Addr().String()
		if f.UDPHeartbeat == nil || *f.UDPHeartbeat {
			if hbConn, err = net.ListenPacket("udp", addrs.Forward); err != nil {
				closeAll(fwLn)
				return fmt.Errorf("forward heartbeat listen udp %s: %w", addrs.Forward, err)
			}
		}
	}
	if h := fc.Inputs.HTTP; h != nil {
		ln, err := net.Listen("tcp", h.Listen)
		if err != nil {
			closeAll(fwLn)
			return fmt.Errorf("http input listen %s: %w", h.Listen, err)
		}
		httpInLn = ln
		addrs.HTTPInput = ln.Addr().String()
	}
	hs := health.New(log)
	if nc != nil {
		hs.AddCheck("nats", health.NATSCheck(nc))
	}
	hs.AddCheck("spools", func(context.Context) error {
		for _, o := range outs {
			if err := o.spool.Err(); err != nil {
				return fmt.Errorf("spool of output %s: %w", o.cfg.Name, err)
			}
			if o.cfg.WhenFull != "drop_newest" && o.spool.Full() {
				return fmt.Errorf("spool of output %s is full", o.cfg.Name)
			}
		}
		return nil
	})
	hs.Handle("GET /metrics", tel.Handler())
	hs.Handle("GET /api/v1/metrics", http.HandlerFunc(m.serveMetrics))
	hs.Handle("GET /api/v1/health", http.HandlerFunc(m.serveHealth))
	hs.Handle("GET /api/v1/uptime", http.HandlerFunc(m.serveUptime))
	httpLn, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		closeAll(fwLn, httpInLn)
		return fmt.Errorf("http listen %s: %w", cfg.HTTPListen, err)
	}
	addrs.HTTP = httpLn.Addr().String()

	// A runner on a lowered-priority thread holds one of the runtime's
	// processors (Ps) while it works, and the kernel may leave that thread
	// waiting: one more P per output keeps the inputs' goroutines as many
	// Ps as there are CPUs. An explicit GOMAXPROCS is left as it is.
	if cfg.OutputNice > 0 && output.NiceSupported && len(outs) > 0 && os.Getenv("GOMAXPROCS") == "" {
		procs := runtime.GOMAXPROCS(0) + len(outs)
		runtime.GOMAXPROCS(procs)
		defer runtime.SetDefaultGOMAXPROCS()
		log.Debug("processors raised for the outputs' lower-priority threads", "gomaxprocs", procs)
	}

	// Runners first, then inputs.
	runCtx, stopRunners := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRunners()
	var runnersWG sync.WaitGroup
	runErr := make(chan error, len(outs)+4)
	for _, o := range outs {
		runnersWG.Add(1)
		go func() {
			defer runnersWG.Done()
			if err := o.runner.Run(runCtx); err != nil {
				runErr <- err
			}
		}()
	}
	// A failing runner stops the daemon.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case err := <-runErr:
			log.Error("output runner failed", "err", err)
			cancel(err)
		case <-runCtx.Done():
		}
	}()

	var inputsWG sync.WaitGroup
	if fwSrv != nil {
		inputsWG.Add(1)
		go func() {
			defer inputsWG.Done()
			if err := fwSrv.Serve(ctx, fwLn, cfg.DrainTimeout/2); err != nil {
				log.Error("forward input stopped", "err", err)
				cancel(err)
			}
		}()
	}
	if hbConn != nil {
		inputsWG.Add(1)
		go func() {
			defer inputsWG.Done()
			if err := fwSrv.ServeHeartbeat(ctx, hbConn); err != nil {
				log.Warn("forward heartbeat stopped", "err", err)
			}
		}()
	}
	if httpInLn != nil {
		inputsWG.Add(1)
		go func() {
			defer inputsWG.Done()
			mux := http.NewServeMux()
			mux.Handle("/", in.HTTPHandler(httpCounters, now, 16<<20))
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			log.Info("http input listening", "addr", httpInLn.Addr().String())
			if err := lifecycleServe(ctx, srv, httpInLn, cfg.DrainTimeout/2); err != nil {
				log.Error("http input stopped", "err", err)
				cancel(err)
			}
		}()
	}
	var httpWG sync.WaitGroup
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	httpWG.Add(1)
	go func() {
		defer httpWG.Done()
		if err := hs.Run(httpCtx, httpLn); err != nil {
			log.Error("http server stopped", "err", err)
			cancel(err)
		}
	}()
	statsCtx, stopStats := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStats()
	var statsWG sync.WaitGroup
	if js != nil {
		pub := &publisher{js: js, subj: v1.Subjects{Prefix: cfg.NATS.Prefix}, instance: cfg.Instance, window: in.Window, m: m, now: now, log: log}
		statsWG.Add(1)
		go func() {
			defer statsWG.Done()
			pub.run(statsCtx, cfg.StatsInterval)
		}()
		sub, err := nc.Subscribe(v1.Subjects{Prefix: cfg.NATS.Prefix}.Ctl("logrouter", "tail"), func(msg *nats.Msg) {
			handleTail(msg, tails, log)
		})
		if err != nil {
			cancel(fmt.Errorf("subscribe tail: %w", err))
		} else {
			defer sub.Unsubscribe()
		}
	}
	log.Info("logrouter started", "instance", cfg.Instance, "forward", addrs.Forward, "http", addrs.HTTP, "http_input", addrs.HTTPInput, "outputs", len(outs))
	if deps.Ready != nil {
		deps.Ready(addrs)
	}

	<-ctx.Done()
	drainStart := time.Now()
	log.Info("logrouter draining", "timeout", cfg.DrainTimeout.String())
	// Inputs stop reading and send the acks of what is durable (at most
	// half the drain timeout).
	inputsWG.Wait()
	// Outputs deliver what they can in what is left of the drain timeout.
	remaining := max(cfg.DrainTimeout-time.Since(drainStart), time.Second)
	for _, o := range outs {
		o.runner.SetDrainTimeout(remaining)
	}
	stopRunners()
	runnersWG.Wait()
	stopStats()
	statsWG.Wait()
	stopHTTP()
	httpWG.Wait()
	var left int64
	for _, o := range outs {
		left += o.spool.Bytes()
	}
	log.Info("logrouter stopped", "spooled_bytes_left", left)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

func closeAll(lns ...net.Listener) {
	for _, l := range lns {
		if l != nil {
			l.Close()
		}
	}
}

func lifecycleServe(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func buildSink(ctx context.Context, oc lrconfig.Output, fc *lrconfig.File, c *output.Counters, stdout io.Writer, d sinkDeps) (output.Sink, int, int, error) {
	format, err := event.ParseFormat(oc.Format)
	if err != nil {
		return nil, 0, 0, err
	}
	switch oc.Type {
	case "stdout":
		return &output.Writer{W: stdout, Format: format, Counters: c}, 1000, 4 << 20, nil
	case "file":
		return &output.File{Path: oc.File.Path, MaxBytes: int64(oc.File.MaxBytes), MaxFiles: oc.File.MaxFiles, Sync: oc.File.Sync,
			DirectIO: oc.File.DirectIO != nil && *oc.File.DirectIO, Format: format, Counters: c, Log: d.log.With("output", oc.Name)}, 5000, 4 << 20, nil
	}
	return buildRemoteSink(ctx, oc, fc, format, c, d)
}
