// Package route decides which outputs an event goes to: routes match the
// event's cluster, service, container and level with globs (path.Match
// syntax), and an event goes to the union of the outputs of every route
// it matches.
package route

import (
	"path"

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

func match(glob, s string) bool {
	if glob == "" || glob == "*" {
		return true
	}
	ok, _ := path.Match(glob, s)
	return ok
}

// Match returns the outputs for e (empty: unrouted).
func (t *Table) Match(e *event.Event) Set {
	if len(t.Routes) == 0 {
		return Set(1)<<t.NOutputs - 1
	}
	var s Set
	for i := range t.Routes {
		r := &t.Routes[i]
		if match(r.Cluster, e.Cluster) && match(r.Service, e.Service) && match(r.Container, e.Container) && match(r.Level, e.Level) {
			for _, o := range r.Outputs {
				s |= 1 << o
			}
		}
	}
	return s
}
