package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
)

// Channel types.
const (
	TypeSlackWebhook = "slack_webhook"
	TypeSlackBot     = "slack_bot"
	TypeWebhook      = "webhook"
	TypeLog          = "log"
)

// Config is the routes file: channels, routes from alerts to channels, the
// log link template, retry and dead-letter settings.
type Config struct {
	File string `yaml:"-"`
	// LogLink is a URL template for the "Logs" link of a message:
	// {schedule}, {cluster}, {run_id}, {task_id}, {from}, {to} (RFC 3339),
	// {from_ms}, {to_ms} (Unix milliseconds).
	LogLink  string          `yaml:"logLink"`
	Channels []ChannelConfig `yaml:"channels"`
	Routes   []Route         `yaml:"routes"`
	Retry    Retry           `yaml:"retry"`
	// DeadLetter is a file undeliverable alerts are appended to (NDJSON);
	// they are always logged at ERROR too.
	DeadLetter string `yaml:"deadLetter"`
}

// Retry bounds delivery retries.
type Retry struct {
	// MaxElapsed is how long an alert is retried before it goes to the
	// dead letter (default 5m).
	MaxElapsed time.Duration `yaml:"maxElapsed"`
	// Initial is the first backoff interval (default 1s).
	Initial time.Duration `yaml:"initial"`
}

// ChannelConfig is one delivery channel.
type ChannelConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// URL: slack_webhook incoming webhook URL, webhook target.
	URL string `yaml:"url"`
	// Headers are added to webhook requests.
	Headers map[string]string `yaml:"headers"`
	// Token and Channel: slack_bot bot token (xoxb-...) and channel id.
	Token   string `yaml:"token"`
	Channel string `yaml:"channel"`
	// APIURL overrides https://slack.com/api (tests, proxies).
	APIURL string `yaml:"apiURL"`
	// ThreadWindow: slack_bot posts an alert into the thread of the first
	// message with the same dedupe key within this window (default 24h).
	ThreadWindow time.Duration `yaml:"threadWindow"`
	// Annotations post a fixed comment into the thread when the regex
	// matches the alert's title, text or fields (slack_bot).
	Annotations []Annotation `yaml:"annotations"`
	// SuppressRepeats drops an alert whose dedupe key and resolved state
	// were delivered to this channel within the window (0: deliver all).
	SuppressRepeats time.Duration `yaml:"suppressRepeats"`
	// Timeout of one HTTP request (default 10s).
	Timeout time.Duration `yaml:"timeout"`

	line int
}

// Annotation is one "regex → comment" rule.
type Annotation struct {
	Match   string `yaml:"match"`
	Comment string `yaml:"comment"`
	re      *regexp.Regexp
}

// Route sends matching alerts to channels. Empty matchers match all; the
// first matching route wins unless it says continue.
type Route struct {
	Kinds      []string `yaml:"kinds"`
	Severities []string `yaml:"severities"`
	Schedules  []string `yaml:"schedules"`
	Clusters   []string `yaml:"clusters"`
	// AlertChannels match the schedule's alerts.channel hint.
	AlertChannels []string `yaml:"alertChannels"`
	Resolved      *bool    `yaml:"resolved"`
	Channels      []string `yaml:"channels"`
	Continue      bool     `yaml:"continue"`

	line int
}

// Matches reports whether a matches the route.
func (r *Route) Matches(a *v1.Alert) bool {
	in := func(list []string, v string) bool {
		return len(list) == 0 || slices.Contains(list, v) || slices.Contains(list, "*")
	}
	return in(r.Kinds, a.GetKind()) && in(r.Severities, v1.SeverityName(a.GetSeverity())) && in(r.Schedules, a.GetSchedule()) &&
		in(r.Clusters, a.GetCluster()) && in(r.AlertChannels, a.GetChannel()) && (r.Resolved == nil || *r.Resolved == a.GetResolved())
}

// ChannelsFor returns the channel names an alert goes to.
func (c *Config) ChannelsFor(a *v1.Alert) []string {
	var out []string
	for i := range c.Routes {
		r := &c.Routes[i]
		if !r.Matches(a) {
			continue
		}
		for _, ch := range r.Channels {
			if !slices.Contains(out, ch) {
				out = append(out, ch)
			}
		}
		if !r.Continue {
			break
		}
	}
	return out
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} in every scalar under n.
func expandEnv(n *yaml.Node, lookup func(n *yaml.Node, name string) (string, bool)) {
	if n.Kind == yaml.ScalarNode {
		if strings.Contains(n.Value, "${") {
			n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
				v, _ := lookup(n, envRef.FindStringSubmatch(m)[1])
				return v
			})
		}
		return
	}
	for _, c := range n.Content {
		expandEnv(c, lookup)
	}
}

// decodeKnown decodes the expanded node n into out, refusing unknown
// fields. yaml.v3 checks known fields only in a Decoder, so they are
// checked on the original text (its lines are the file's; type errors there
// are ignored, since ${VAR} is not expanded in it), and the values are
// decoded from the node, which keeps the file's lines too.
func decodeKnown(orig []byte, n *yaml.Node, out *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(orig))
	dec.KnownFields(true)
	var scratch Config
	var te *yaml.TypeError
	if err := dec.Decode(&scratch); errors.As(err, &te) {
		var unknown []string
		for _, m := range te.Errors {
			if strings.Contains(m, " not found in type ") {
				unknown = append(unknown, m)
			}
		}
		if len(unknown) > 0 {
			return &yaml.TypeError{Errors: unknown}
		}
	} else if err != nil {
		return err
	}
	return n.Decode(out)
}

// knownKinds are the alert kinds routes may name.
var knownKinds = []string{"run_failed", "run_failed_to_start", "task_stuck_pending", "run_overrun", "run_missed", "run_skipped",
	"no_success", "silent_run", "overlap", "cluster_capacity", "recovered", "summary", "*"}

// Load reads a routes file. ${VAR} references are replaced from the
// environment (lookup; os.LookupEnv when nil). Every problem is reported
// with file and line.
func Load(path string, lookup func(string) (string, bool)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes file: %w", err)
	}
	return Parse(path, data, lookup)
}

// Parse parses a routes file's content.
func Parse(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	// ${VAR} is replaced in scalar values only (not in comments, and a
	// value containing '#' or ': ' cannot change the document's shape).
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty routes file", file)
	}
	var probs []string
	expandEnv(root.Content[0], func(n *yaml.Node, name string) (string, bool) {
		v, ok := lookup(name)
		if !ok {
			probs = append(probs, fmt.Sprintf("%s:%d: environment variable %s is not set", file, n.Line, name))
		}
		return v, ok
	})
	c := &Config{File: file}
	if err := decodeKnown(data, root.Content[0], c); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	// Second pass over the node tree for the line of each entry.
	top := root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		items := top.Content[i+1].Content
		switch top.Content[i].Value {
		case "channels":
			for j := range items {
				if j < len(c.Channels) {
					c.Channels[j].line = items[j].Line
				}
			}
		case "routes":
			for j := range items {
				if j < len(c.Routes) {
					c.Routes[j].line = items[j].Line
				}
			}
		}
	}
	if c.Retry.MaxElapsed <= 0 {
		c.Retry.MaxElapsed = 5 * time.Minute
	}
	if c.Retry.Initial <= 0 {
		c.Retry.Initial = time.Second
	}
	names := map[string]bool{}
	for i := range c.Channels {
		ch := &c.Channels[i]
		at := fmt.Sprintf("%s:%d: channels[%d]", file, ch.line, i)
		switch {
		case ch.Name == "":
			probs = append(probs, at+".name: required")
		case names[ch.Name]:
			probs = append(probs, fmt.Sprintf("%s.name: %q is defined twice", at, ch.Name))
		}
		names[ch.Name] = true
		switch ch.Type {
		case TypeSlackWebhook, TypeWebhook:
			if !strings.HasPrefix(ch.URL, "http://") && !strings.HasPrefix(ch.URL, "https://") {
				probs = append(probs, fmt.Sprintf("%s.url: %q must be an http(s) URL", at, ch.URL))
			}
		case TypeSlackBot:
			if ch.Token == "" {
				probs = append(probs, at+".token: required for slack_bot")
			}
			if ch.Channel == "" {
				probs = append(probs, at+".channel: required for slack_bot")
			}
		case TypeLog:
		default:
			probs = append(probs, fmt.Sprintf("%s.type: %q is not one of slack_webhook, slack_bot, webhook, log", at, ch.Type))
		}
		if len(ch.Annotations) > 0 && ch.Type != TypeSlackBot {
			probs = append(probs, at+".annotations: only slack_bot channels post annotations")
		}
		for j := range ch.Annotations {
			re, err := regexp.Compile(ch.Annotations[j].Match)
			if err != nil {
				probs = append(probs, fmt.Sprintf("%s.annotations[%d].match: %v", at, j, err))
				continue
			}
			ch.Annotations[j].re = re
			if ch.Annotations[j].Comment == "" {
				probs = append(probs, fmt.Sprintf("%s.annotations[%d].comment: required", at, j))
			}
		}
		if ch.ThreadWindow <= 0 {
			ch.ThreadWindow = 24 * time.Hour
		}
		if ch.Timeout <= 0 {
			ch.Timeout = 10 * time.Second
		}
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		at := fmt.Sprintf("%s:%d: routes[%d]", file, r.line, i)
		if len(r.Channels) == 0 {
			probs = append(probs, at+".channels: at least one channel is required")
		}
		for _, ch := range r.Channels {
			if !names[ch] {
				probs = append(probs, fmt.Sprintf("%s.channels: unknown channel %q", at, ch))
			}
		}
		for _, k := range r.Kinds {
			if !slices.Contains(knownKinds, k) {
				probs = append(probs, fmt.Sprintf("%s.kinds: unknown alert kind %q", at, k))
			}
		}
		for _, s := range r.Severities {
			if _, err := v1.ParseSeverity(s); err != nil && s != "*" {
				probs = append(probs, fmt.Sprintf("%s.severities: %v", at, err))
			}
		}
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(probs, "\n"))
	}
	return c, nil
}

// LogOnly is the configuration without a routes file: every alert to the
// log.
func LogOnly() *Config {
	return &Config{
		Channels: []ChannelConfig{{Name: "log", Type: TypeLog}},
		Routes:   []Route{{Channels: []string{"log"}}},
		Retry:    Retry{MaxElapsed: 5 * time.Minute, Initial: time.Second},
	}
}

// WebhookAll is the `taskyard dev --alert-webhook URL` configuration: every
// alert to the webhook and to the log.
func WebhookAll(url string) *Config {
	c := LogOnly()
	c.Channels = append(c.Channels, ChannelConfig{Name: "webhook", Type: TypeWebhook, URL: url, Timeout: 10 * time.Second})
	c.Routes = []Route{{Channels: []string{"webhook", "log"}}}
	return c
}
