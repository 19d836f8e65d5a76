package xds

import (
	"reflect"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// What one delta stream holds, without a map entry per resource: a stream
// answered at seq holds, of each name it wants, what the cache served at
// seq (in the cache's versionLog); of the others, nothing; except for the
// names in ex. The exceptions
// are the names a barrier held back, and whatever a full comparison or a
// subscription change left different; for a stream in sync they are few.
// What a stream held of a name changed since is the name's prev in its
// first log entry after seq. A stream that falls behind the log's start
// (stopped reading) has what it lacks moved into ex (pinLocked): its memory
// grows with what changed while it was away, never past what is served and
// removed.

// sent is one stream's state.
type sent struct {
	seq  uint64
	wild bool               // wildcard when answered at seq
	ex   map[string]holding // where the stream differs from the rule above
	held map[string]struct{}
	sub  cache.Subscription // the latest, for pinLocked

	// returned is the map handed to go-control-plane with each response,
	// which hands it back with the stream's next request: empty, it only
	// tells streams apart. go-control-plane may mark names in it on an
	// unsubscription; those are cleared (candidatesLocked sees them in
	// the request).
	returned map[string]string
	closed   time.Time // when its last watch was cancelled (zero: open)
}

// wants says whether a subscription asks for a name.
func wants(sub cache.Subscription, n string) bool {
	if sub.IsWildcard() {
		return true
	}
	_, ok := sub.SubscribedResources()[n]
	return ok
}

// candidatesLocked maps each name that may differ for s to what s holds of
// it: those logged since s was answered, its exceptions, and the names req
// (nil: none) subscribes or unsubscribes, which go-control-plane has already
// applied to sub.
func (c *deltaCache) candidatesLocked(s *sent, sub cache.Subscription, req *cache.DeltaRequest) map[string]holding {
	subscribed := sub.SubscribedResources()
	wanted := func(n string) bool { // when s was answered, for names req does not name
		_, ok := subscribed[n]
		return s.wild || ok
	}
	out := make(map[string]holding, len(s.ex))
	c.log.since(s.seq, func(n string, was holding) {
		if wanted(n) {
			out[n] = was
		} else {
			out[n] = holding{}
		}
	})
	for _, n := range req.GetResourceNamesSubscribe() {
		switch _, ok := out[n]; {
		case n == wildcardName:
		case !s.wild:
			out[n] = holding{} // new to it
		case !ok:
			out[n] = c.log.current(n) // wildcard: it had it anyway
		}
	}
	for n, h := range s.ex {
		out[n] = h
	}
	for n := range s.held {
		if _, ok := out[n]; !ok && wanted(n) {
			out[n] = c.log.current(n)
		} else if !ok {
			out[n] = holding{}
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		switch {
		case n == wildcardName:
		case sub.IsWildcard():
			// As go-control-plane marks it: sent again if served, else
			// removed.
			out[n] = holding{has: true}
		default:
			out[n] = holding{} // Envoy drops what it unsubscribes
		}
	}
	return out
}

const wildcardName = "*"

// newStreamLocked starts the state of a stream the cache does not know (a
// new one, or one that reconnected with what it holds as initial versions,
// which go-control-plane put in its returned map): every name it has or
// may want is a candidate.
func (c *deltaCache) newStreamLocked(sub cache.Subscription) (*sent, map[string]holding) {
	s := &sent{returned: map[string]string{}, wild: sub.IsWildcard()}
	have := map[string]holding{}
	if sub.IsWildcard() {
		for n := range c.items {
			have[n] = holding{}
		}
	} else {
		for n := range sub.SubscribedResources() {
			have[n] = holding{}
		}
	}
	for n, v := range sub.ReturnedResources() {
		have[n] = holding{version: v, has: true}
	}
	return s, have
}

// exceptLocked records that s holds h of n from now on (the cache serving
// it as it, and s wanting n or not).
func (c *deltaCache) exceptLocked(s *sent, n string, h holding, wanted bool, it *item) {
	rule := holding{}
	if wanted && it != nil {
		rule = holding{version: it.version, has: true}
	}
	s.ex = except(s.ex, n, h, rule)
}

// pinLocked makes s independent of the log: what it lacks of the changes
// since it was answered becomes exceptions, before the log drops them.
func (c *deltaCache) pinLocked(s *sent) {
	if s.sub == nil {
		return
	}
	for n, h := range c.candidatesLocked(s, s.sub, nil) {
		c.exceptLocked(s, n, h, wants(s.sub, n), c.items[n])
	}
	s.seq = c.log.seq
}

// forgetAfter drops a stream's state that long after its last watch was
// cancelled without a new one (the stream closed: a reconnecting Envoy
// comes back with a new map, so nothing would find it again).
const forgetAfter = time.Minute

// forgetLocked drops the state of closed streams.
func (c *deltaCache) forgetLocked() {
	now := c.now()
	if now.Sub(c.forgot) < forgetAfter/10 {
		return // a sweep per watch would cost the fleet's size each time
	}
	c.forgot = now
	for id, s := range c.streams {
		if !s.closed.IsZero() && now.Sub(s.closed) > forgetAfter {
			delete(c.streams, id)
		}
	}
}

// closer is the cancel of a watch answered at once: a stream whose last
// watch is cancelled that way has closed, unless a request follows.
func (c *deltaCache) closer(s *sent) func() {
	return func() {
		c.mu.Lock()
		s.closed = c.now()
		c.mu.Unlock()
	}
}

// mapID identifies a map by its address: the server hands back the very
// map a response carried.
func mapID(m map[string]string) uintptr {
	if m == nil {
		return 0
	}
	return reflect.ValueOf(m).Pointer()
}
