package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/taskyard/taskyard/services/logrouter/internal/record"
)

// HTTPHandler is the HTTP NDJSON input: POST a body of JSON objects, one
// per line. A record's time is its "time" field (RFC 3339) or the receive
// time; the tag is the `tag` query parameter. The response is 204 once
// every record is durable in the spools, 400 naming the first bad line
// (nothing of that request is taken), 503 while shutting down.
//
// At most maxBody bytes per request and 4 requests at a time are read (the
// others wait), which bounds the memory this input can take.
func (in *Ingest) HTTPHandler(c *InputCounters, now func() time.Time, maxBody int64) http.Handler {
	slots := make(chan struct{}, 4)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST NDJSON records", http.StatusMethodNotAllowed)
			return
		}
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-r.Context().Done():
			return
		}
		body := http.MaxBytesReader(w, r.Body, maxBody)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), int(maxBody))
		var recs []Record
		var wire int
		line := 0
		recv := now()
		for sc.Scan() {
			line++
			b := bytes.TrimSpace(sc.Bytes())
			wire += len(sc.Bytes()) + 1
			if len(b) == 0 {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				c.ProtocolErrors.Add(1)
				http.Error(w, fmt.Sprintf("line %d: not a JSON object: %v", line, err), http.StatusBadRequest)
				return
			}
			t := recv
			if ts, ok := m["time"].(string); ok {
				if pt, err := time.Parse(time.RFC3339Nano, ts); err == nil {
					t = pt
				}
			}
			recs = append(recs, Record{Time: t, Record: record.FromMap(m)})
		}
		if err := sc.Err(); err != nil {
			c.ProtocolErrors.Add(1)
			http.Error(w, fmt.Sprintf("line %d: %v", line+1, err), http.StatusBadRequest)
			return
		}
		wait, err := in.Take(r.Context(), c, r.URL.Query().Get("tag"), recs, wire)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := wait(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
