// Package metricsjson reads the exporter's GET /api/v1/metrics document; it
// is the client side shared by mackerel-plugin-taskyard and check-taskyard.
package metricsjson

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"time"
)

// DefaultURL is the local exporter's document.
const DefaultURL = "http://127.0.0.1:2020/api/v1/metrics"

// Section is a Fluent Bit section: plugin instance → counter → value.
type Section map[string]map[string]float64

// Doc is the document. Maps are keyed by (Mackerel-safe) name.
type Doc struct {
	Input    Section                                  `json:"input"`
	Filter   Section                                  `json:"filter"`
	Output   Section                                  `json:"output"`
	Instance map[string]map[string]Section            `json:"instance"`
	Schedule map[string]map[string]float64            `json:"schedule"`
	Logs     map[string]map[string]float64            `json:"logs"`
	Cluster  map[string]map[string]float64            `json:"cluster"`
	Alerts   map[string]float64                       `json:"alerts"`
	Daemons  map[string]map[string]map[string]float64 `json:"daemons"`
}

// Headers parses "Name: value" lines (as mackerel-plugin-json's -header).
func Headers(lines []string) (http.Header, error) {
	if len(lines) == 0 {
		return http.Header{}, nil
	}
	r := textproto.NewReader(bufio.NewReader(strings.NewReader(strings.Join(lines, "\r\n") + "\r\n\r\n")))
	h, err := r.ReadMIMEHeader()
	if err != nil {
		return nil, fmt.Errorf("-header %q: want \"Name: value\": %w", lines, err)
	}
	return http.Header(h), nil
}

// Fetch GETs url with headers and decodes the document.
func Fetch(ctx context.Context, url string, h http.Header, timeout time.Duration) (*Doc, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("exporter url %q: %w", url, err)
	}
	for k, vs := range h {
		if strings.EqualFold(k, "Host") {
			req.Host = vs[0]
			continue
		}
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read exporter %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("read exporter %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read exporter %s: HTTP %s: %.200s", url, resp.Status, body)
	}
	var d Doc
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("exporter %s: not a taskyard metrics document: %w", url, err)
	}
	if d.Schedule == nil {
		return nil, fmt.Errorf("exporter %s: not a taskyard metrics document: no \"schedule\" section", url)
	}
	return &d, nil
}
