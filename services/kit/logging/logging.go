// Package logging builds the slog.Logger every taskyard daemon writes with:
// JSON lines with `time`, `level`, `msg` and the attributes.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel reads debug, info, warn or error (case-insensitive).
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// New returns a JSON logger writing to w at level, with the daemon name as
// the `daemon` attribute of every line.
func New(w io.Writer, level slog.Level, daemon string) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	l := slog.New(h)
	if daemon != "" {
		l = l.With("daemon", daemon)
	}
	return l
}

// Discard is a logger that writes nothing, for tests.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
