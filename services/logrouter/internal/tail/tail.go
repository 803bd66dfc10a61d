// Package tail is live tail: a client asks on taskyard.ctl.logrouter.tail
// with a TailRequest naming its inbox and filters; matching lines are
// published to that inbox until the request's TTL passes unless renewed.
// With nobody tailing, the check on the hot path is one atomic load.
package tail

import (
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/taskyard/taskyard/proto/taskyard/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/taskyard/taskyard/services/logrouter/internal/event"
	"github.com/taskyard/taskyard/services/logrouter/internal/pipeline"
	"github.com/taskyard/taskyard/services/logrouter/internal/route"
)

type sub struct {
	req     *v1.TailRequest
	minRank int
	expires time.Time
}

// Registry holds the active tails.
type Registry struct {
	now     func() time.Time
	publish func(subject string, data []byte) error

	active atomic.Int32
	mu     sync.Mutex
	subs   map[string]*sub
}

// New returns a registry publishing with publish (nc.Publish).
func New(now func() time.Time, publish func(subject string, data []byte) error) *Registry {
	return &Registry{now: now, publish: publish, subs: map[string]*sub{}}
}

// MaxTTL caps a tail's lifetime between renewals.
const MaxTTL = 5 * time.Minute

// Add registers or renews req.
func (r *Registry) Add(req *v1.TailRequest) {
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	ttl = min(ttl, MaxTTL)
	rank := 0
	if req.GetLevel() != "" {
		rank = pipeline.LevelRank(pipeline.NormalizeLevel(req.GetLevel()))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subs[req.GetInbox()] = &sub{req: req, minRank: rank, expires: r.now().Add(ttl)}
	r.active.Store(int32(len(r.subs)))
}

// Active reports whether anyone is tailing.
func (r *Registry) Active() bool { return r.active.Load() > 0 }

// Offer sends evs to every matching tail and expires old tails.
func (r *Registry) Offer(evs []event.Event) {
	if !r.Active() {
		return
	}
	now := r.now()
	r.mu.Lock()
	subs := make([]*sub, 0, len(r.subs))
	for k, s := range r.subs {
		if now.After(s.expires) {
			delete(r.subs, k)
			continue
		}
		subs = append(subs, s)
	}
	r.active.Store(int32(len(r.subs)))
	r.mu.Unlock()
	for i := range evs {
		e := &evs[i]
		var data []byte
		for _, s := range subs {
			if !route.Match(s.req.GetCluster(), e.Cluster) || !route.Match(s.req.GetService(), e.Service) || pipeline.LevelRank(e.Level) < s.minRank {
				continue
			}
			if data == nil {
				data, _ = proto.Marshal(&v1.TailLine{
					Time: timestamppb.New(e.Time), Cluster: e.Cluster, Service: e.Service,
					Container: e.Container, Task: e.Task, Level: e.Level, Log: e.Log, Source: e.Source,
				})
			}
			_ = r.publish(s.req.GetInbox(), data)
		}
	}
}
