// Package route decides which outputs an event goes to: routes match the
// event's cluster, service, container and level with globs (path.Match
// syntax, alternatives separated by '|'), and an event goes to the union
// of the outputs of every route it matches.
package route

import (
	"path"
	"strings"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
)

// Route is one match rule.
type Route struct {
	Cluster, Service, Container, Level string
	// Outputs are indexes into the router's output list.
	Outputs []int
}

// Set is a bit set of output indexes (at most 64 outputs).
type Set uint64

// Table is the ordered list of routes. With no routes, every event goes to
// every output.
type Table struct {
	Routes   []Route
	NOutputs int
}

// Match reports whether s matches pattern: globs in path.Match syntax,
// several alternatives separated by '|' ("warn|error|fatal"); empty and
// "*" match everything.
func Match(pattern, s string) bool {
	if pattern == "" || pattern == "*" {
		return true
	}
	for {
		glob, rest, more := strings.Cut(pattern, "|")
		if ok, _ := path.Match(glob, s); ok {
			return true
		}
		if !more {
			return false
		}
		pattern = rest
	}
}

// Valid reports whether every alternative of pattern is a valid glob.
func Valid(pattern string) bool {
	for _, g := range strings.Split(pattern, "|") {
		if _, err := path.Match(g, ""); err != nil {
			return false
		}
	}
	return true
}

// Match returns the outputs for e (empty: unrouted).
func (t *Table) Match(e *event.Event) Set {
	if len(t.Routes) == 0 {
		return Set(1)<<t.NOutputs - 1
	}
	var s Set
	for i := range t.Routes {
		r := &t.Routes[i]
		if Match(r.Cluster, e.Cluster) && Match(r.Service, e.Service) && Match(r.Container, e.Container) && Match(r.Level, e.Level) {
			for _, o := range r.Outputs {
				s |= 1 << o
			}
		}
	}
	return s
}
