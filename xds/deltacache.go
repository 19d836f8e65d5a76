package xds

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// deltaCache answers delta watches at the cost of what changed, not of
// what is served. go-control-plane's LinearCache compares every resource
// a subscription covers with what the stream was sent, on each update and
// on each ACK; with tens of thousands of scopes and route configurations
// that was most of the server's CPU per change.
//
// Here every change of a name gets a sequence number and an entry in a
// versionLog, with the name's version before. A stream is described by the sequence number it
// was last answered at and its exceptions (deltastream.go), not by a map of
// everything it holds: at a thousand Envoys that map was most of the
// controller's memory. So a request is answered from the log since then,
// the exceptions and the names it subscribes.
//
// SotW watches and Fetch go to the wrapped cache, which is fed only once a
// SotW watch has come: it holds a copy of every resource.
type deltaCache struct {
	sotw     sotwCache
	sotwLive bool
	typeURL  string

	mu       sync.Mutex
	items    map[string]*item
	log      *versionLog
	streams  map[uintptr]*sent
	watches  map[*deltaWatch]struct{}
	now      func() time.Time
	fullRuns int // requests answered by a full comparison (a stream not known)

	// Barriers (barrier.go): the barrier of each name's latest change, if
	// any; passes says whether a node has passed one (nil: none is ever
	// waited for).
	needs      map[string]*barrier
	passes     passer
	sweepEvery time.Duration                       // how often needs are rid of barriers past their deadline
	heldBack   map[string]map[*deltaWatch]struct{} // by node: open watches whose stream has names held back
	swept      time.Time                           // when needs were last rid of aged barriers
	forgot     time.Time                           // when streams were last swept (forgetLocked)
}

type item struct {
	msg     types.Resource
	version string
	once    sync.Once
	bytes   []byte
	err     error
}

func (it *item) marshaled() ([]byte, error) {
	it.once.Do(func() { it.bytes, it.err = cache.MarshalResource(it.msg) })
	return it.bytes, it.err
}

type deltaWatch struct {
	req *cache.DeltaRequest
	sub cache.Subscription
	out chan cache.DeltaResponse
	s   *sent
}

func newDeltaCache(typeURL string, sotw sotwCache) *deltaCache {
	return &deltaCache{
		sotw:     sotw,
		typeURL:  typeURL,
		items:    map[string]*item{},
		log:      newVersionLog(),
		streams:  map[uintptr]*sent{},
		watches:  map[*deltaWatch]struct{}{},
		heldBack: map[string]map[*deltaWatch]struct{}{},
		needs:    map[string]*barrier{},
		now:      time.Now,
	}
}

// update applies a change (with versions computed by the server) and
// answers the open delta watches it concerns. With a barrier b, a delta
// stream gets the change only once its Envoy has passed b, and the SotW
// watches not at all: the server hands it to them with updateSotW once
// the SotW Envoys hold what b asks for.
func (c *deltaCache) update(set map[string]entry, remove []string, b *barrier) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if c.sotwLive && b == nil {
		err = c.updateSotWLocked(set, remove)
	}
	need := func(n string) {
		if b != nil {
			c.needs[n] = b
		} else {
			delete(c.needs, n)
		}
	}
	for n, e := range set {
		c.items[n] = &item{msg: e.msg, version: e.version}
		c.log.set(n, e.version)
		need(n)
	}
	for _, n := range remove {
		delete(c.items, n)
		c.log.set(n, "")
		need(n)
	}
	if start := c.log.trimPoint(); start != 0 {
		for _, s := range c.streams {
			if s.seq < start {
				c.pinLocked(s)
			}
		}
		for w := range c.watches {
			if w.s.seq < start {
				c.pinLocked(w.s)
			}
		}
		c.log.trim()
	}
	c.answerWatchesLocked()
	return err
}

// sotwOn says whether SotW watches have come (and so get changes).
func (c *deltaCache) sotwOn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sotwLive
}

// updateSotW hands a change to the SotW watches (see update).
func (c *deltaCache) updateSotW(set map[string]entry, remove []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sotwLive {
		return nil
	}
	return c.updateSotWLocked(set, remove)
}

func (c *deltaCache) updateSotWLocked(set map[string]entry, remove []string) error {
	up := make(map[string]types.Resource, len(set))
	for n, e := range set {
		up[n] = e.msg
	}
	return c.sotw.UpdateResources(up, remove)
}

// answerWatchesLocked answers each open watch with what its stream has not
// had of the log, as far as its barriers let it.
func (c *deltaCache) answerWatchesLocked() {
	for w := range c.watches {
		c.answerLocked(w)
	}
}

func (c *deltaCache) answerLocked(w *deltaWatch) {
	if r := c.respondLocked(w, c.candidatesLocked(w.s, w.sub, nil), false); r != nil {
		w.out <- r
		delete(c.watches, w)
		c.setHeldBackLocked(w, false)
	} else {
		c.setHeldBackLocked(w, len(w.s.held) > 0)
	}
}

// CreateWatch serves a SotW watch from the wrapped cache, loading it with
// every resource on the first one.
func (c *deltaCache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	c.mu.Lock()
	if !c.sotwLive {
		all := make(map[string]types.Resource, len(c.items))
		for n, it := range c.items {
			all[n] = it.msg
		}
		if err := c.sotw.UpdateResources(all, nil); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.sotwLive = true
	}
	c.mu.Unlock()
	return c.sotw.CreateWatch(req, sub, out)
}

// Fetch is the wrapped cache's.
func (c *deltaCache) Fetch(ctx context.Context, req *cache.Request) (cache.Response, error) {
	return c.sotw.Fetch(ctx, req)
}

func (c *deltaCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked()
	w := &deltaWatch{req: req, sub: sub, out: out}
	var have map[string]holding
	known := c.streams[mapID(sub.ReturnedResources())]
	if known != nil {
		w.s = known
		have = c.candidatesLocked(known, sub, req)
		clear(known.returned) // go-control-plane marks names in it (see sent)
	} else {
		c.fullRuns++
		w.s, have = c.newStreamLocked(sub)
	}
	w.s.sub, w.s.closed = sub, time.Time{}
	// Envoy waits for an answer to its first wildcard request, even an
	// empty one, to finish initialising. A stream new to the cache is
	// answered too, even when it holds everything already (an Envoy back
	// after a restart): the answer hands go-control-plane the stream's own
	// small map in place of the versions it announced, and its ACK lets the
	// tracker keep the node's state as a few exceptions (acked.go).
	first := req.GetResponseNonce() == "" && (sub.IsWildcard() || known == nil)
	if r := c.respondLocked(w, have, first); r != nil {
		out <- r
		return c.closer(w.s), nil
	}
	c.watches[w] = struct{}{}
	c.setHeldBackLocked(w, len(w.s.held) > 0)
	return func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.setHeldBackLocked(w, false)
		w.s.closed = c.now()
		c.mu.Unlock()
	}, nil
}

// respondLocked builds the response of w for the candidate names (each with
// what the stream has of it), or nil when none of them differs from what
// the stream has (and !always). It records what it sends as the stream's
// new state.
func (c *deltaCache) respondLocked(w *deltaWatch, have map[string]holding, always bool) *deltaResponse {
	s := w.s
	r := &deltaResponse{req: w.req, version: strconv.FormatUint(c.log.seq, 10), returned: s.returned}
	node := w.req.GetNode().GetId()
	now := c.now()
	for n, h := range have {
		it := c.items[n]
		wanted := wants(w.sub, n)
		if b := c.needs[n]; b != nil && now.After(b.deadline) {
			delete(c.needs, n) // passed by everyone, as all before it
		} else if b != nil && c.passes != nil && !c.passes(node, b) {
			if s.held == nil {
				s.held = map[string]struct{}{}
			}
			s.held[n] = struct{}{}
			c.exceptLocked(s, n, h, wanted, it)
			continue
		}
		delete(s.held, n)
		switch {
		case it != nil && wanted && (!h.has || h.version != it.version):
			r.items = append(r.items, named{n, it})
			h = holding{version: it.version, has: true}
		case it == nil && h.has:
			r.removed = append(r.removed, n)
			h = holding{}
		}
		c.exceptLocked(s, n, h, wanted, it)
	}
	s.seq, s.wild = c.log.seq, w.sub.IsWildcard()
	if len(r.items) == 0 && len(r.removed) == 0 && !always {
		return nil
	}
	c.streams[mapID(s.returned)] = s // known from now on: its Envoy gets this map back
	slices.SortFunc(r.items, func(a, b named) int { return cmp.Compare(a.name, b.name) })
	slices.Sort(r.removed)
	return r
}
