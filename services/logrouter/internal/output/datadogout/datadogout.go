// Package datadogout sends events to the Datadog HTTP logs intake v2
// (POST /api/v2/logs with DD-API-KEY, gzip-compressed JSON arrays of at
// most 1,000 entries and 5 MB uncompressed). Each entry carries ddsource,
// service, hostname, status (the normalized level mapped to Datadog's
// statuses) and ddtags "system:<cluster>,service:<service>,
// application:<container>,task:<task>" plus the static tags. 408, 429
// and 5xx answers are retried; any other 4xx is permanent (dead-letter).
package datadogout

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/output"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/spool"
)

// Intake limits.
const (
	MaxEntries      = 1000
	MaxPayloadBytes = 5_000_000
	MaxEntryBytes   = 1_000_000
)

// Sink is the Datadog output.
type Sink struct {
	Client *http.Client
	// URL is the intake endpoint, e.g. https://http-intake.logs.datadoghq.com/api/v2/logs.
	URL        string
	APIKey     string
	Source     string
	Hostname   string
	StaticTags []string
	Counters   *output.Counters
}

// IntakeURL is the v2 endpoint of a Datadog site (datadoghq.com, datadoghq.eu, us3.datadoghq.com, ...).
func IntakeURL(site string) string {
	return "https://http-intake.logs." + site + "/api/v2/logs"
}

func (s *Sink) entry(b []byte, e *event.Event) []byte {
	b = append(b, `{"ddsource":`...)
	b = event.AppendJSONString(b, s.Source)
	b = append(b, `,"service":`...)
	b = event.AppendJSONString(b, e.Service)
	b = append(b, `,"hostname":`...)
	b = event.AppendJSONString(b, s.Hostname)
	b = append(b, `,"status":`...)
	b = event.AppendJSONString(b, pipeline.DatadogStatus(e.Level))
	tags := "system:" + e.Cluster + ",service:" + e.Service + ",application:" + e.Container + ",task:" + e.Task
	if len(s.StaticTags) > 0 {
		tags += "," + strings.Join(s.StaticTags, ",")
	}
	b = append(b, `,"ddtags":`...)
	b = event.AppendJSONString(b, tags)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, e.Time.UnixMilli(), 10)
	if e.RunID != "" {
		b = append(b, `,"run_id":`...)
		b = event.AppendJSONString(b, e.RunID)
	}
	b = append(b, `,"message":`...)
	msg := e.Log
	if len(msg) > MaxEntryBytes-4096 {
		msg = msg[:MaxEntryBytes-4096]
	}
	b = event.AppendJSONString(b, msg)
	return append(b, '}')
}

// Deliver sends evs in as many requests as the limits need; on a
// retryable failure the events from the failed request on are returned
// for retry (earlier requests are not resent).
func (s *Sink) Deliver(ctx context.Context, evs []event.Event, end spool.Pos) (spool.Pos, error) {
	var body []byte
	var ent []byte
	start, n := 0, 0
	send := func(upto int) error {
		if n == 0 {
			return nil
		}
		body = append(body, ']')
		err := s.post(ctx, body)
		if err == nil {
			s.Counters.ProcRecords.Add(int64(n))
			s.Counters.ProcBytes.Add(int64(len(body)))
			start, n, body = upto, 0, body[:0]
			return nil
		}
		if pe, ok := err.(*output.PermanentError); ok {
			pe.Events = evs[start:upto]
			pe.Remaining, pe.Untried = evs[upto:], true
			return pe
		}
		return &output.PartialError{Remaining: evs[start:], Err: err}
	}
	for i := range evs {
		ent = s.entry(ent[:0], &evs[i])
		if n > 0 && (n >= MaxEntries || len(body)+1+len(ent)+1 > MaxPayloadBytes) {
			if err := send(i); err != nil {
				return spool.Pos{}, err
			}
		}
		if n == 0 {
			body = append(body[:0], '[')
		} else {
			body = append(body, ',')
		}
		body = append(body, ent...)
		n++
	}
	if err := send(len(evs)); err != nil {
		return spool.Pos{}, err
	}
	return end, nil
}

func (s *Sink) post(ctx context.Context, payload []byte) error {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	_, _ = zw.Write(payload)
	_ = zw.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, &z)
	if err != nil {
		return &output.PermanentError{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("DD-API-KEY", s.APIKey)
	resp, err := s.Client.Do(req)
	if err != nil {
		return fmt.Errorf("datadog intake: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return fmt.Errorf("datadog intake: %s: %s", resp.Status, bytes.TrimSpace(msg))
	default:
		return &output.PermanentError{Err: fmt.Errorf("datadog intake: %s: %s", resp.Status, bytes.TrimSpace(msg))}
	}
}

// Flush has nothing buffered.
func (s *Sink) Flush(context.Context, bool) (spool.Pos, bool, error) { return spool.Pos{}, false, nil }

// Close does nothing.
func (s *Sink) Close() error { return nil }
