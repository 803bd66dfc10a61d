// Command bench-logrouter measures the logrouter's forward input end to
// end: FireLens-shaped records with ~200-byte JSON log lines, sent as
// PackedForward chunks of 1,000 entries with acks requested, to a
// logrouter child process whose spool fsyncs (group commit), delivering to
// a file or to S3 (gofakes3 in this process). It reports records/s, MiB/s,
// ack latency p50/p99, and the child's peak RSS and CPU time, next to two
// baselines measured in the same run on the same bytes: loopback TCP to a
// discard server, and fsync'd sequential writes to the spool directory.
//
// Every scenario and baseline runs -runs times, round after round (the
// fsync'd writes in particular vary from one run to the next on a virtual
// disk); the ratio is reported per round and as the median.
//
//	go run ./cmd/bench-logrouter -records 300000 -runs 5
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/taskyard/taskyard/services/kit/logging"
	"github.com/taskyard/taskyard/services/logrouter/app"
)

func main() {
	var (
		serve   = flag.String("serve", "", "internal: run a logrouter child with this config file")
		records = flag.Int("records", 300000, "records per scenario")
		chunk   = flag.Int("chunk", 1000, "entries per PackedForward chunk")
		conns   = flag.Int("conns", 4, "client connections")
		window  = flag.Int("window", 4, "chunks in flight per connection")
		dir     = flag.String("dir", "", "work directory (default: a temp dir)")
		runs    = flag.Int("runs", 3, "rounds of every scenario and baseline, one after the other; the ratio is reported per round and as the median")
		nice    = flag.Int("output-nice", app.DefaultOutputNice, "the child's --output-nice (0: outputs at the inputs' CPU priority)")
	)
	flag.Parse()
	outputNice = *nice
	if *serve != "" {
		if err := child(*serve); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*records, *chunk, *conns, *window, *runs, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "bench-logrouter:", err)
		os.Exit(1)
	}
}

// outputNice is the child's app.Config.OutputNice (passed on as a flag).
var outputNice int

// child runs the logrouter and writes its addresses next to the config.
func child(cfgPath string) error {
	if path := os.Getenv("BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path + "." + filepath.Base(filepath.Dir(cfgPath)))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if path := os.Getenv("BENCH_TRACE"); path != "" {
		f, err := os.Create(path + "." + filepath.Base(filepath.Dir(cfgPath)))
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	if path := os.Getenv("BENCH_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			f, err := os.Create(path + "." + filepath.Base(filepath.Dir(cfgPath)))
			if err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	// As taskyard-logrouter does by default (--memory-limit 128MiB).
	debug.SetMemoryLimit(128 << 20)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ac := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	return app.Run(ctx, app.Config{ConfigFile: cfgPath, Instance: "bench", HTTPListen: "127.0.0.1:0", DrainTimeout: 60 * time.Second, StatsInterval: 10 * time.Second, NoNATS: true, OutputNice: outputNice},
		app.Deps{Log: logging.New(io.Discard, slog.LevelInfo, "logrouter"), AWS: &ac, Ready: func(a app.Addrs) {
			b, _ := json.Marshal(a)
			_ = os.WriteFile(cfgPath+".addrs.tmp", b, 0o644)
			_ = os.Rename(cfgPath+".addrs.tmp", cfgPath+".addrs")
		}})
}

// --- MessagePack, just what the bench sends ---

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	default:
		b = append(b, 0xda, byte(n>>8), byte(n))
	}
	return append(b, s...)
}

// entry is [EventTime, {firelens fields}].
func entry(b []byte, t time.Time, i int) []byte {
	b = append(b, 0x92, 0xd7, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(t.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	line := fmt.Sprintf(`{"level":"info","ts":"%s","msg":"processed batch","job":"nightly-report","batch":%d,"rows":%d,"duration_ms":%d,"user":"svc-reporting","request_id":"%016x"}`,
		t.UTC().Format(time.RFC3339Nano), i, i%977*13, i%311, uint64(i)*0x9e3779b97f4a7c15)
	fields := [][2]string{
		{"log", line}, {"source", "stdout"}, {"container_name", "app"}, {"container_id", "3f2a9c1b7e5d4c2a9f1e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a"},
		{"ecs_cluster", "prod"}, {"ecs_task_arn", "arn:aws:ecs:us-east-1:123456789012:task/prod/0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
		{"ecs_task_definition", "taskyard-nightly-report:42"},
	}
	b = append(b, 0x80|byte(len(fields)))
	for _, f := range fields {
		b = appendStr(b, f[0])
		b = appendStr(b, f[1])
	}
	return b
}

// packed is [tag, bin payload, {"size": n, "chunk": id}].
func packed(entries []byte, n int, id string) []byte {
	b := []byte{0x93}
	b = appendStr(b, "ecs.app")
	b = append(b, 0xc6)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	b = append(b, entries...)
	b = append(b, 0x82)
	b = appendStr(b, "size")
	b = append(b, 0xce)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = appendStr(b, "chunk")
	return appendStr(b, id)
}

type frame struct {
	data []byte
	id   string
	n    int
}

func frames(records, per int) ([]frame, int) {
	var out []frame
	now := time.Now()
	total := 0
	for i := 0; i < records; i += per {
		var es []byte
		n := min(per, records-i)
		for j := 0; j < n; j++ {
			es = entry(es, now.Add(time.Duration(i+j)*time.Microsecond), i+j)
		}
		id := fmt.Sprintf("bench-%08d", i)
		f := packed(es, n, id)
		total += len(f)
		out = append(out, frame{data: f, id: id, n: n})
	}
	return out, total
}

// --- the client: conns connections, window chunks in flight each ---

type result struct {
	elapsed time.Duration
	lat     []time.Duration
}

func send(addr string, fs []frame, conns, window int) (result, error) {
	var mu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	errc := make(chan error, conns)
	start := time.Now()
	for c := 0; c < conns; c++ {
		var mine []frame
		for i := c; i < len(fs); i += conns {
			mine = append(mine, fs[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				errc <- err
				return
			}
			defer conn.Close()
			sent := make(chan time.Time, window)
			done := make(chan error, 1)
			go func() {
				br := bufio.NewReader(conn)
				for range mine {
					id, err := readAck(br)
					if err != nil {
						done <- err
						return
					}
					_ = id
					t := <-sent
					mu.Lock()
					lats = append(lats, time.Since(t))
					mu.Unlock()
				}
				done <- nil
			}()
			for _, f := range mine {
				sent <- time.Now()
				if _, err := conn.Write(f.data); err != nil {
					errc <- err
					return
				}
			}
			if err := <-done; err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		return result{}, err
	}
	return result{elapsed: time.Since(start), lat: lats}, nil
}

// readAck reads {"ack": id} (fixmap 1, fixstr "ack", str).
func readAck(br *bufio.Reader) (string, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return "", err
	}
	if string(hdr) != "\x81\xa3ack" {
		return "", fmt.Errorf("unexpected ack bytes %x", hdr)
	}
	c, err := br.ReadByte()
	if err != nil {
		return "", err
	}
	n := 0
	switch {
	case c&0xe0 == 0xa0:
		n = int(c & 0x1f)
	case c == 0xd9:
		b, err := br.ReadByte()
		if err != nil {
			return "", err
		}
		n = int(b)
	default:
		return "", fmt.Errorf("unexpected ack string type %x", c)
	}
	id := make([]byte, n)
	_, err = io.ReadFull(br, id)
	return string(id), err
}

// --- child process bookkeeping ---

type proc struct {
	cmd    *exec.Cmd
	addrs  app.Addrs
	peak   int64
	stopMu sync.Mutex
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startChild(cfgPath string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-output-nice", strconv.Itoa(outputNice), "-serve", cfgPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, stop: make(chan struct{})}
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(cfgPath + ".addrs")
		if err == nil {
			if err := json.Unmarshal(b, &p.addrs); err != nil {
				return nil, err
			}
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			return nil, errors.New("logrouter child did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.wg.Add(1)
	go func() { // sample RSS
		defer p.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				if r := rssKiB(cmd.Process.Pid); r > p.peak {
					p.peak = r
				}
			}
		}
	}()
	return p, nil
}

func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// cpu returns user+system CPU time of pid.
func cpu(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func (p *proc) metrics() (map[string]map[string]map[string]int64, error) {
	resp, err := http.Get("http://" + p.addrs.HTTP + "/api/v1/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m map[string]map[string]map[string]int64
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

func (p *proc) waitDelivered(out string, n int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m, err := p.metrics()
		if err == nil && m["output"][out]["proc_records"] >= n {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("output %s: not all %d records delivered in %s", out, n, timeout)
}

func (p *proc) terminate() (time.Duration, error) {
	used := cpu(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	err := p.cmd.Wait()
	close(p.stop)
	p.wg.Wait()
	return used, err
}

// --- baselines ---

// discard: loopback TCP to a server that reads and throws away.
func discard(fs []frame, conns int) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	var srvWG sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			srvWG.Add(1)
			go func() {
				defer srvWG.Done()
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			for i := c; i < len(fs); i += conns {
				_, _ = conn.Write(fs[i].data)
			}
			conn.Close()
		}()
	}
	wg.Wait()
	srvWG.Wait()
	return time.Since(start), nil
}

// fsyncWrites: the same bytes written sequentially to one file in dir,
// fsync after every chunk.
func fsyncWrites(fs []frame, dir string) (time.Duration, error) {
	f, err := os.Create(filepath.Join(dir, "baseline.seg"))
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	start := time.Now()
	for _, fr := range fs {
		if _, err := f.Write(fr.data); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

func pct(l []time.Duration, p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l[min(int(float64(len(l))*p), len(l)-1)]
}

const mib = 1 << 20

func run(records, per, conns, window, runs int, dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "bench-logrouter")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	fs, total := frames(records, per)
	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), %s, %s/%s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Printf("workload: %d records, %d chunks of %d, %.1f MiB on the wire (%.0f B/record), %d connections x %d chunks in flight, acks on, spool fsync on, output nice +%d; %d rounds\n\n",
		records, len(fs), per, float64(total)/mib, float64(total)/float64(records), conns, window, outputNice, runs)

	s3srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer s3srv.Close()
	s3c := s3.New(s3.Options{BaseEndpoint: aws.String(s3srv.URL), Region: "us-east-1", UsePathStyle: true, Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("logs")}); err != nil {
		return err
	}
	rate := func(d time.Duration) (float64, float64) {
		return float64(records) / d.Seconds(), float64(total) / mib / d.Seconds()
	}
	fmt.Println("| round | scenario | records/s | MiB/s | ack p50 | ack p99 | delivered (end to end) | peak RSS | CPU |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	var overSlower, overTCP, overSync []float64
	for round := 1; round <= runs; round++ {
		dTCP, err := discard(fs, conns)
		if err != nil {
			return err
		}
		spoolDir := filepath.Join(dir, "spool-baseline")
		if err := os.MkdirAll(spoolDir, 0o755); err != nil {
			return err
		}
		dSync, err := fsyncWrites(fs, spoolDir)
		if err != nil {
			return err
		}
		r, m := rate(dTCP)
		fmt.Printf("| %d | baseline: loopback TCP to discard | %.0f | %.1f | - | - | - | - | - |\n", round, r, m)
		r, m = rate(dSync)
		fmt.Printf("| %d | baseline: fsync'd sequential writes (fsync per chunk) | %.0f | %.1f | - | - | - | - | - |\n", round, r, m)

		var fileRate float64
		for _, sc := range []struct{ name, out, yaml string }{
			{"forward -> file", "file", "  - name: file\n    type: file\n    file: {path: \"%[1]s/out/logs.ndjson\", maxBytes: 1GiB}\n"},
			{"forward -> s3 (gofakes3)", "s3", "  - name: s3\n    type: s3\n    s3: {bucket: logs, endpoint: \"" + s3srv.URL + "\", forcePathStyle: true, region: us-east-1, flushAge: 1s}\n"},
		} {
			sdir := filepath.Join(dir, fmt.Sprint(sc.out, "-", round))
			if err := os.MkdirAll(sdir, 0o755); err != nil {
				return err
			}
			res, p, err := scenario(sdir, sc.yaml, sc.out, fs, conns, window, int64(records))
			if err != nil {
				return fmt.Errorf("%s: %w", sc.name, err)
			}
			// Each round's files go: the next round starts on the same disk space.
			if err := os.RemoveAll(sdir); err != nil {
				return err
			}
			r, m := rate(res.elapsed)
			if sc.out == "file" {
				fileRate = r
			}
			fmt.Printf("| %d | %s | %.0f | %.1f | %s | %s | %s | %.0f MiB | %.1f s |\n", round, sc.name, r, m,
				pct(res.lat, 0.50).Round(100*time.Microsecond), pct(res.lat, 0.99).Round(100*time.Microsecond),
				res.delivered.Round(time.Millisecond), float64(p.peak)/1024, res.cpu.Seconds())
		}
		sr, _ := rate(max(dTCP, dSync))
		tr, _ := rate(dTCP)
		fr, _ := rate(dSync)
		overSlower = append(overSlower, 100*fileRate/sr)
		overTCP = append(overTCP, 100*fileRate/tr)
		overSync = append(overSync, 100*fileRate/fr)
	}
	fmt.Println()
	for i := range overSlower {
		fmt.Printf("round %d: forward -> file / slower baseline = %.0f%% (/ loopback TCP %.0f%%, / fsync'd writes %.0f%%)\n", i+1, overSlower[i], overTCP[i], overSync[i])
	}
	fmt.Printf("median over %d rounds: forward -> file / slower baseline = %.0f%% (target >= 40%%)\n", runs, median(overSlower))
	return nil
}

type scenarioResult struct {
	result
	delivered time.Duration
	cpu       time.Duration
}

// scenario runs one logrouter child with the output yaml (%[1]s is sdir)
// and sends every frame to it.
func scenario(sdir, outYAML, out string, fs []frame, conns, window int, records int64) (scenarioResult, *proc, error) {
	cfg := fmt.Sprintf("inputs:\n  forward: {listen: 127.0.0.1:0}\noutputs:\n"+outYAML+"spool:\n  dir: %[1]s/spool\n", sdir)
	cfgPath := filepath.Join(sdir, "lr.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return scenarioResult{}, nil, err
	}
	p, err := startChild(cfgPath)
	if err != nil {
		return scenarioResult{}, nil, err
	}
	res, err := send(p.addrs.Forward, fs, conns, window)
	if err != nil {
		p.terminate()
		return scenarioResult{}, nil, err
	}
	start := time.Now().Add(-res.elapsed)
	if err := p.waitDelivered(out, records, 5*time.Minute); err != nil {
		p.terminate()
		return scenarioResult{}, nil, err
	}
	delivered := time.Since(start)
	used, err := p.terminate()
	if err != nil {
		return scenarioResult{}, nil, fmt.Errorf("child exit: %w", err)
	}
	return scenarioResult{result: res, delivered: delivered, cpu: used}, p, nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
