package deliver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"github.com/taskyard/taskyard/services/exitwatch/internal/deliver"
	"github.com/taskyard/taskyard/services/exitwatch/internal/natstest"
	"github.com/taskyard/taskyard/services/kit/logging"
)

// recorder is an HTTP endpoint that records request bodies and answers
// with the scripted statuses (then 200).
type recorder struct {
	*httptest.Server
	mu       sync.Mutex
	bodies   []string
	headers  []http.Header
	statuses []int
	block    chan struct{}
}

func newRecorder(statuses ...int) *recorder {
	r := &recorder{statuses: statuses}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.block != nil {
			<-r.block
		}
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		if status == http.StatusOK {
			r.bodies = append(r.bodies, string(body))
			r.headers = append(r.headers, req.Header.Clone())
		}
		r.mu.Unlock()
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte("ok"))
	}))
	return r
}

func (r *recorder) Bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

func startDispatcher(t *testing.T, env *natstest.Env, cfg *deliver.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	x, err := deliver.New(cfg, "", deliver.Deps{JS: env.JS, Threads: deliver.NewThreadStore(env.KV(t, "taskyard-snapshots")), Log: logging.Discard(),
		Now: time.Now, Meter: noop.NewMeterProvider().Meter("t")})
	require.NoError(t, err)
	cons, err := x.Consumers(ctx)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx, cons) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
}

func publish(t *testing.T, env *natstest.Env, a *v1.Alert, id string) {
	t.Helper()
	_, err := v1.Publish(context.Background(), env.JS, v1.Subjects{}.Alert(a.GetSeverity(), a.GetKind()), a, id)
	require.NoError(t, err)
}

func parse(t *testing.T, yml string, env map[string]string) *deliver.Config {
	t.Helper()
	c, err := deliver.Parse("routes.yml", []byte(yml), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	return c
}

func TestRoutesWebhookRetriesAndDeadLetter(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	critical := newRecorder(http.StatusInternalServerError, http.StatusTooManyRequests) // fails twice, then takes it
	defer critical.Close()
	summary := newRecorder()
	defer summary.Close()
	gone := newRecorder(http.StatusNotFound)
	defer gone.Close()
	dl := filepath.Join(t.TempDir(), "dead-letter.ndjson")
	cfg := parse(t, `
logLink: "https://logs.example.com/{schedule}/{run_id}"
retry: {initial: 10ms, maxElapsed: 20s}
deadLetter: `+dl+`
channels:
  - {name: pager, type: webhook, url: "`+critical.URL+`", headers: {Authorization: "Bearer ${PAGER_TOKEN}"}}
  - {name: summaries, type: webhook, url: "`+summary.URL+`"}
  - {name: gone, type: webhook, url: "`+gone.URL+`"}
routes:
  - kinds: [summary]
    channels: [summaries]
  - severities: [critical]
    channels: [pager, gone]
`, map[string]string{"PAGER_TOKEN": "s3cret"})
	startDispatcher(t, env, cfg)
	failed := goldenAlerts()["run_failed_exit3"]
	publish(t, env, failed, "a1")
	publish(t, env, goldenAlerts()["summary"], "a2")
	publish(t, env, goldenAlerts()["cluster_capacity"], "a3") // warning: routed nowhere
	require.Eventually(t, func() bool { return len(critical.Bodies()) == 1 && len(summary.Bodies()) == 1 }, 15*time.Second, 10*time.Millisecond)

	var got v1.Alert
	require.NoError(t, protojson.Unmarshal([]byte(critical.Bodies()[0]), &got))
	require.Equal(t, "run_failed", got.GetKind())
	require.Equal(t, "3", got.GetFields()["exit_code"])
	require.Equal(t, "https://runbooks.example.com/nightly-report", got.GetRunbookUrl())
	require.Equal(t, "run_failed", kindOf(t, critical.Bodies()[0]))
	require.Equal(t, "Bearer s3cret", critical.headers[0].Get("Authorization"))
	require.Equal(t, "summary", kindOf(t, summary.Bodies()[0]))

	// 404 is permanent: straight to the dead letter.
	require.Eventually(t, func() bool { data, _ := os.ReadFile(dl); return strings.Contains(string(data), `"channel":"gone"`) }, 10*time.Second, 10*time.Millisecond)
	data, _ := os.ReadFile(dl)
	var line struct {
		Channel, Error string
		Alert          map[string]any
	}
	require.NoError(t, json.Unmarshal([]byte(strings.Split(strings.TrimSpace(string(data)), "\n")[0]), &line))
	require.Contains(t, line.Error, "HTTP 404")
	require.Equal(t, "run_failed", line.Alert["kind"])
	require.Empty(t, gone.Bodies())
}

func TestSlowChannelDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	slow := newRecorder()
	slow.block = make(chan struct{})
	defer slow.Close()
	defer close(slow.block)
	fast := newRecorder()
	defer fast.Close()
	cfg := parse(t, `
channels:
  - {name: slow, type: webhook, url: "`+slow.URL+`", timeout: 30s}
  - {name: fast, type: webhook, url: "`+fast.URL+`"}
routes:
  - channels: [slow, fast]
`, nil)
	startDispatcher(t, env, cfg)
	for i := range 5 {
		publish(t, env, goldenAlerts()["run_failed_exit3"], "x"+strconv.Itoa(i))
	}
	require.Eventually(t, func() bool { return len(fast.Bodies()) == 5 }, 10*time.Second, 10*time.Millisecond)
	require.Empty(t, slow.Bodies())
}

// slackAPI is a chat.postMessage endpoint.
type slackAPI struct {
	*httptest.Server
	mu    sync.Mutex
	posts []map[string]any
	seq   atomic.Int64
	fail  string // next reply's error, once
}

func newSlackAPI(t *testing.T, token string) *slackAPI {
	s := &slackAPI{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/api/chat.postMessage" || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			_, _ = w.Write([]byte(`{"ok":false,"error":"invalid_auth"}`))
			return
		}
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			_, _ = w.Write([]byte(`{"ok":false,"error":"invalid_form_data"}`))
			return
		}
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			_, _ = w.Write([]byte(`{"ok":false,"error":"invalid_json"}`))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail != "" {
			_, _ = w.Write([]byte(`{"ok":false,"error":"` + s.fail + `"}`))
			s.fail = ""
			return
		}
		if m["channel"] != "C0123BATCH" {
			_, _ = w.Write([]byte(`{"ok":false,"error":"channel_not_found"}`))
			return
		}
		ts := "1795230000." + strconv.FormatInt(100000+s.seq.Add(1), 10)
		m["ts"] = ts
		s.posts = append(s.posts, m)
		_, _ = w.Write([]byte(`{"ok":true,"channel":"C0123BATCH","ts":"` + ts + `","message":{"text":"x"}}`))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *slackAPI) Posts() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.posts...)
}

func TestSlackBotThreadsAndAnnotations(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	api := newSlackAPI(t, "xoxb-test")
	hook := newRecorder()
	defer hook.Close()
	cfg := parse(t, `
retry: {initial: 10ms, maxElapsed: 20s}
channels:
  - name: bot
    type: slack_bot
    token: xoxb-test
    channel: C0123BATCH
    apiURL: `+api.URL+`/api
    threadWindow: 1h
    annotations:
      - match: "CannotPullContainerError"
        comment: "Check that the image tag exists in ECR and the execution role may pull it."
  - {name: hook, type: slack_webhook, url: "`+hook.URL+`"}
routes:
  - channels: [bot, hook]
`, nil)
	startDispatcher(t, env, cfg)
	api.mu.Lock()
	api.fail = "internal_error" // retried
	api.mu.Unlock()
	first := goldenAlerts()["run_failed_to_start"]
	publish(t, env, first, "1")
	require.Eventually(t, func() bool { return len(api.Posts()) == 2 }, 10*time.Second, 10*time.Millisecond, "alert + annotation")
	posts := api.Posts()
	root := posts[0]["ts"].(string)
	require.Nil(t, posts[0]["thread_ts"])
	require.Equal(t, "[CRITICAL] sync-users failed to start", posts[0]["text"])
	require.Equal(t, root, posts[1]["thread_ts"])
	require.Equal(t, "Check that the image tag exists in ECR and the execution role may pull it.", posts[1]["text"])

	again := goldenAlerts()["run_failed_to_start"]
	again.RunId = "sync-users-20261121T060000Z-s-bb11bb22cc33dd44"
	publish(t, env, again, "2")
	resolved := goldenAlerts()["recovered"]
	resolved.DedupeKey, resolved.Schedule = "run:sync-users", "sync-users"
	publish(t, env, resolved, "3")
	require.Eventually(t, func() bool { return len(api.Posts()) == 4 }, 10*time.Second, 10*time.Millisecond)
	posts = api.Posts()
	require.Equal(t, root, posts[2]["thread_ts"], "a repeat goes into the first message's thread")
	require.Equal(t, root, posts[3]["thread_ts"])
	require.Equal(t, true, posts[3]["reply_broadcast"], "the resolution is broadcast to the channel")

	// The incoming webhook got the same three alerts, each in full.
	require.Eventually(t, func() bool { return len(hook.Bodies()) == 3 }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, hook.Bodies()[0], "sync-users failed to start")
}

func TestParseProblems(t *testing.T) {
	t.Parallel()
	_, err := deliver.Parse("routes.yml", []byte(`
channels:
  - {name: a, type: slack_webhook, url: "ftp://x"}
  - {name: a, type: teams}
  - {name: b, type: slack_bot}
  - {name: c, type: webhook, url: "https://x", annotations: [{match: "(", comment: ""}]}
  - {name: d, type: webhook, url: "${MISSING}"}
routes:
  - {kinds: [run_exploded], severities: [loud], channels: [nope]}
  - {}
`), func(string) (string, bool) { return "", false })
	require.Error(t, err)
	for _, want := range []string{
		`routes.yml:3: channels[0].url: "ftp://x" must be an http(s) URL`,
		`routes.yml:4: channels[1].name: "a" is defined twice`,
		`routes.yml:4: channels[1].type: "teams" is not one of`,
		`routes.yml:5: channels[2].token: required for slack_bot`,
		`routes.yml:5: channels[2].channel: required for slack_bot`,
		`routes.yml:6: channels[3].annotations: only slack_bot channels post annotations`,
		`routes.yml:6: channels[3].annotations[0].match: error parsing regexp`,
		`routes.yml:7: environment variable MISSING is not set`,
		`routes.yml:9: routes[0].channels: unknown channel "nope"`,
		`routes.yml:9: routes[0].kinds: unknown alert kind "run_exploded"`,
		`routes.yml:9: routes[0].severities: unknown severity "loud"`,
		`routes.yml:10: routes[1].channels: at least one channel is required`,
	} {
		require.ErrorContains(t, err, want)
	}
	_, err = deliver.Parse("routes.yml", []byte("channels:\n  - {name: a, type: log, colour: red}\n"), nil)
	require.ErrorContains(t, err, "line 2: field colour not found")
}

func TestExampleRoutesFile(t *testing.T) {
	t.Parallel()
	c, err := deliver.Load("../../../../examples/exitwatch-routes.yml", func(k string) (string, bool) { return "https://hooks.example.com/" + k, true })
	require.NoError(t, err)
	require.NotEmpty(t, c.Routes)
	require.Equal(t, []string{"batch-bot", "pager"}, c.ChannelsFor(goldenAlerts()["run_failed_exit3"]))
	require.Equal(t, []string{"batch-slack"}, c.ChannelsFor(goldenAlerts()["summary"]))
}

func TestSuppressRepeats(t *testing.T) {
	t.Parallel()
	env := natstest.Start(t)
	rec := newRecorder()
	defer rec.Close()
	all := newRecorder()
	defer all.Close()
	cfg := parse(t, `
channels:
  - {name: quiet, type: webhook, url: "`+rec.URL+`", suppressRepeats: 1h}
  - {name: all, type: webhook, url: "`+all.URL+`"}
routes:
  - channels: [quiet, all]
`, nil)
	startDispatcher(t, env, cfg)
	a := goldenAlerts()["run_failed_exit3"]
	for i := range 3 {
		publish(t, env, a, "r"+strconv.Itoa(i))
	}
	res := goldenAlerts()["recovered"]
	publish(t, env, res, "res")
	require.Eventually(t, func() bool { return len(all.Bodies()) == 4 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return len(rec.Bodies()) == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, "run_failed", kindOf(t, rec.Bodies()[0]))
	require.Equal(t, "recovered", kindOf(t, rec.Bodies()[1]), "the resolution is not a repeat")
}

// kindOf reads the "kind" of a protojson Alert body (protojson's spacing
// varies between builds, so bodies are parsed, not compared as text).
func kindOf(t *testing.T, body string) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	k, _ := m["kind"].(string)
	return k
}
