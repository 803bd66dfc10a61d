package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// SlackText is a Block Kit text object.
type SlackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// SlackBlock is a Block Kit block (header, section, context).
type SlackBlock struct {
	Type     string      `json:"type"`
	Text     *SlackText  `json:"text,omitempty"`
	Fields   []SlackText `json:"fields,omitempty"`
	Elements []SlackText `json:"elements,omitempty"`
}

// SlackMessage is the body of an incoming webhook POST and of
// chat.postMessage (which adds channel and thread_ts).
type SlackMessage struct {
	Channel        string       `json:"channel,omitempty"`
	ThreadTS       string       `json:"thread_ts,omitempty"`
	ReplyBroadcast bool         `json:"reply_broadcast,omitempty"`
	Text           string       `json:"text"`
	Blocks         []SlackBlock `json:"blocks,omitempty"`
	UnfurlLinks    bool         `json:"unfurl_links"`
}

// fieldOrder lists the alert fields shown, in order, with their labels.
var fieldOrder = []struct{ key, label string }{
	{"outcome", "Outcome"},
	{"exit_code", "Exit code"},
	{"container", "Container"},
	{"stopped_reason", "Stopped reason"},
	{"stop_code", "Stop code"},
	{"duration", "Duration"},
	{"timeout", "Timeout"},
	{"running_for", "Running for"},
	{"last_status", "Status"},
	{"pending_for", "Pending for"},
	{"expected_at", "Expected at"},
	{"scheduled_at", "Scheduled at"},
	{"running_tasks", "Running tasks"},
	{"allowed_tasks", "Allowed tasks"},
	{"task_limit", "Task limit"},
	{"succeed_within", "Succeed within"},
	{"last_success", "Last success"},
	{"log_records", "Log records"},
}

func icon(a *v1.Alert) string {
	if a.GetResolved() {
		return ":white_check_mark:"
	}
	switch a.GetSeverity() {
	case v1.Severity_SEVERITY_CRITICAL:
		return ":red_circle:"
	case v1.Severity_SEVERITY_WARNING:
		return ":large_orange_circle:"
	}
	return ":large_blue_circle:"
}

// escape escapes Slack mrkdwn control characters.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// LogURL fills the log link template for an alert ("" without template or
// without a schedule or cluster to point at).
func LogURL(tmpl string, a *v1.Alert) string {
	if tmpl == "" || (a.GetSchedule() == "" && a.GetCluster() == "") {
		return ""
	}
	to := a.GetTime().AsTime().Add(5 * time.Minute)
	from := to.Add(-time.Hour)
	if s, ok := a.GetFields()["scheduled_at"]; ok {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			from = t.Add(-time.Minute)
		}
	}
	return strings.NewReplacer(
		"{schedule}", a.GetSchedule(), "{cluster}", a.GetCluster(), "{run_id}", a.GetRunId(),
		"{task_id}", shortID(a.GetFields()["task_arn"]),
		"{from}", from.UTC().Format(time.RFC3339), "{to}", to.UTC().Format(time.RFC3339),
		"{from_ms}", strconv.FormatInt(from.UnixMilli(), 10), "{to_ms}", strconv.FormatInt(to.UnixMilli(), 10),
	).Replace(tmpl)
}

func shortID(arn string) string {
	if i := strings.LastIndex(arn, "/"); i >= 0 {
		return arn[i+1:]
	}
	return arn
}

// FormatSlack renders an alert as a readable Slack message: what failed,
// exit code, stopped reason, duration, and runbook and log links.
func FormatSlack(a *v1.Alert, logLink string) SlackMessage {
	title := icon(a) + " " + a.GetTitle()
	sev := strings.ToUpper(v1.SeverityName(a.GetSeverity()))
	if a.GetResolved() {
		sev = "RESOLVED"
	}
	m := SlackMessage{Text: fmt.Sprintf("[%s] %s", sev, a.GetTitle())}
	m.Blocks = append(m.Blocks, SlackBlock{Type: "section", Text: &SlackText{Type: "mrkdwn", Text: "*" + escape(cut(title, 300)) + "*"}})
	if t := a.GetText(); t != "" {
		if a.GetKind() == "summary" {
			t = "```" + t + "```"
		} else {
			t = escape(t)
		}
		m.Blocks = append(m.Blocks, SlackBlock{Type: "section", Text: &SlackText{Type: "mrkdwn", Text: cut(t, 2900)}})
	}
	var fields []SlackText
	add := func(label, v string) {
		if v != "" && len(fields) < 10 {
			fields = append(fields, SlackText{Type: "mrkdwn", Text: "*" + label + "*\n" + escape(cut(v, 1900))})
		}
	}
	add("Schedule", a.GetSchedule())
	add("Cluster", a.GetCluster())
	if a.GetKind() != "summary" {
		for _, f := range fieldOrder {
			v := a.GetFields()[f.key]
			if f.key == "exit_code" && v != "" && a.GetFields()["oom"] == "true" {
				v += " (out of memory)"
			}
			add(f.label, v)
		}
	}
	if len(fields) > 0 {
		m.Blocks = append(m.Blocks, SlackBlock{Type: "section", Fields: fields})
	}
	var ctx []string
	if a.GetRunId() != "" {
		ctx = append(ctx, "run `"+escape(a.GetRunId())+"`")
	}
	if u := a.GetRunbookUrl(); u != "" {
		ctx = append(ctx, "<"+u+"|Runbook>")
	}
	switch a.GetKind() {
	case "run_missed", "run_skipped", "no_success", "summary", "cluster_capacity", "overlap":
		// Nothing ran (or no single run): no log link.
	default:
		if u := LogURL(logLink, a); u != "" {
			ctx = append(ctx, "<"+u+"|Logs>")
		}
	}
	ctx = append(ctx, "`"+a.GetKind()+"`")
	m.Blocks = append(m.Blocks, SlackBlock{Type: "context", Elements: []SlackText{{Type: "mrkdwn", Text: strings.Join(ctx, " · ")}}})
	return m
}

// MarshalSlack encodes a message as Slack wants it (no HTML escaping of
// <, > and & inside the JSON strings: Slack's own escapes stay readable).
func MarshalSlack(m SlackMessage) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// permanent marks errors retrying cannot fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// retryAfter carries a server's Retry-After.
type retryAfter struct {
	err   error
	after time.Duration
}

func (r retryAfter) Error() string { return r.err.Error() }
func (r retryAfter) Unwrap() error { return r.err }

// IsPermanent reports whether err will not go away by retrying.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

func parseRetryAfter(h string) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// classify turns an HTTP status into nil, a retryable or a permanent error.
func classify(resp *http.Response, body []byte, what string) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err := fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, strings.TrimSpace(cut(string(body), 200)))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return retryAfter{err: err, after: parseRetryAfter(resp.Header.Get("Retry-After"))}
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return err
	}
	return permanent{err}
}

func postJSON(ctx context.Context, hc *http.Client, url string, body []byte, headers map[string]string) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, permanent{err}
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "taskyard-exitwatch")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp, data, nil
}

// slackWebhook posts to an incoming webhook.
type slackWebhook struct {
	cfg     ChannelConfig
	hc      *http.Client
	logLink string
}

func (s *slackWebhook) Name() string { return s.cfg.Name }

func (s *slackWebhook) Send(ctx context.Context, a *v1.Alert) error {
	body, err := MarshalSlack(FormatSlack(a, s.logLink))
	if err != nil {
		return permanent{err}
	}
	resp, data, err := postJSON(ctx, s.hc, s.cfg.URL, body, nil)
	if err != nil {
		return fmt.Errorf("slack webhook %s: %w", s.cfg.Name, err)
	}
	return classify(resp, data, "slack webhook "+s.cfg.Name)
}

// ThreadStore remembers the first message of each incident per Slack
// channel, shared by replicas (KV).
type ThreadStore interface {
	Get(ctx context.Context, key string) (ts string, at time.Time, ok bool, err error)
	Put(ctx context.Context, key, ts string, at time.Time) error
}

// slackBot posts with chat.postMessage and threads repeats.
type slackBot struct {
	cfg     ChannelConfig
	hc      *http.Client
	logLink string
	threads ThreadStore
	now     func() time.Time
	log     *slog.Logger
}

func (s *slackBot) Name() string { return s.cfg.Name }

type postResult struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	TS    string `json:"ts"`
}

// slackPermanentErrors are chat.postMessage errors retrying cannot fix.
var slackPermanentErrors = map[string]bool{"channel_not_found": true, "not_in_channel": true, "invalid_auth": true, "account_inactive": true,
	"token_revoked": true, "no_permission": true, "missing_scope": true, "is_archived": true, "msg_too_long": true, "invalid_blocks": true, "not_authed": true}

func (s *slackBot) post(ctx context.Context, m SlackMessage) (string, error) {
	m.Channel = s.cfg.Channel
	body, err := MarshalSlack(m)
	if err != nil {
		return "", permanent{err}
	}
	api := strings.TrimSuffix(s.cfg.APIURL, "/")
	if api == "" {
		api = "https://slack.com/api"
	}
	resp, data, err := postJSON(ctx, s.hc, api+"/chat.postMessage", body, map[string]string{"Authorization": "Bearer " + s.cfg.Token})
	if err != nil {
		return "", fmt.Errorf("slack chat.postMessage %s: %w", s.cfg.Name, err)
	}
	if err := classify(resp, data, "slack chat.postMessage "+s.cfg.Name); err != nil {
		return "", err
	}
	var r postResult
	if err := json.Unmarshal(data, &r); err != nil {
		return "", fmt.Errorf("slack chat.postMessage %s: undecodable reply: %w", s.cfg.Name, err)
	}
	if !r.OK {
		err := fmt.Errorf("slack chat.postMessage %s: %s", s.cfg.Name, r.Error)
		if r.Error == "ratelimited" {
			return "", retryAfter{err: err, after: parseRetryAfter(resp.Header.Get("Retry-After"))}
		}
		if slackPermanentErrors[r.Error] {
			return "", permanent{err}
		}
		return "", err
	}
	return r.TS, nil
}

func (s *slackBot) Send(ctx context.Context, a *v1.Alert) error {
	m := FormatSlack(a, s.logLink)
	key := s.cfg.Name + "\x00" + a.GetDedupeKey()
	now := s.now()
	if a.GetDedupeKey() != "" {
		ts, at, ok, err := s.threads.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("slack thread lookup: %w", err)
		}
		if ok && now.Sub(at) < s.cfg.ThreadWindow {
			m.ThreadTS = ts
			m.ReplyBroadcast = a.GetResolved()
			_, err := s.post(ctx, m)
			return err
		}
	}
	ts, err := s.post(ctx, m)
	if err != nil {
		return err
	}
	// The alert is out from here on: later problems are logged, not
	// retried (a retry would post it twice).
	if a.GetDedupeKey() != "" && !a.GetResolved() {
		if err := s.threads.Put(ctx, key, ts, now); err != nil {
			s.log.Warn("slack thread not remembered; the next repeat starts a new thread", "channel", s.cfg.Name, "err", err)
		}
	}
	// Annotations go into the new thread once.
	hay := a.GetTitle() + "\n" + a.GetText()
	keys := make([]string, 0, len(a.GetFields()))
	for k := range a.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hay += "\n" + k + "=" + a.GetFields()[k]
	}
	for _, an := range s.cfg.Annotations {
		if an.re != nil && an.re.MatchString(hay) {
			if _, err := s.post(ctx, SlackMessage{ThreadTS: ts, Text: an.Comment}); err != nil {
				s.log.Warn("slack annotation not posted", "channel", s.cfg.Name, "match", an.Match, "err", err)
			}
		}
	}
	return nil
}
