package xds

import (
	"cmp"
	"context"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// deltaCache answers delta watches at the cost of what changed, not of
// what is served. go-control-plane's LinearCache compares every resource
// a subscription covers with what the stream was sent, on each update and
// on each ACK; with tens of thousands of scopes and route configurations
// that was most of the server's CPU per change.
//
// Here every update gets a sequence number and a log entry per name. A
// stream's sent versions live in the map the server hands back with each
// of its requests (the returned resources); that map is the cache's own,
// updated in place, and remembered with the sequence number it is current
// to. So a request is answered from the log since then plus the names it
// subscribes. A map the cache does not know (a new stream, a forgotten
// one) is compared in full once, as LinearCache would.
//
// SotW watches and Fetch go to the wrapped cache, which is fed only once a
// SotW watch has come: it holds a copy of every resource.
type deltaCache struct {
	sotw     sotwCache
	sotwLive bool
	typeURL  string

	mu       sync.Mutex
	seq      uint64
	items    map[string]*item
	log      []logEntry // names changed, oldest first
	logStart uint64     // log holds every change after this
	streams  map[uintptr]*sent
	watches  map[*deltaWatch]struct{}
	now      func() time.Time
	fullRuns int // requests answered by a full comparison

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

type logEntry struct {
	seq  uint64
	name string
}

// sent is what one stream was sent: versions by name, complete up to seq
// but for the names held back by a barrier its Envoy has not passed.
type sent struct {
	versions map[string]string
	seq      uint64
	used     time.Time
	held     map[string]struct{}
}

type deltaWatch struct {
	req *cache.DeltaRequest
	sub cache.Subscription
	out chan cache.DeltaResponse
	s   *sent
}

const (
	// maxLog bounds the log; a stream further behind is compared in full.
	maxLog = 1 << 16
	// forgetAfter drops what a stream was sent when it made no request for
	// that long (a closed stream): it is only an optimisation.
	forgetAfter = 10 * time.Minute
)

func newDeltaCache(typeURL string, sotw sotwCache) *deltaCache {
	return &deltaCache{
		sotw:     sotw,
		typeURL:  typeURL,
		items:    map[string]*item{},
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
	c.seq++
	changed := make([]string, 0, len(set)+len(remove))
	for n, e := range set {
		c.items[n] = &item{msg: e.msg, version: e.version}
		changed = append(changed, n)
	}
	for _, n := range remove {
		delete(c.items, n)
		changed = append(changed, n)
	}
	for _, n := range changed {
		c.log = append(c.log, logEntry{seq: c.seq, name: n})
		if b != nil {
			c.needs[n] = b
		} else {
			delete(c.needs, n)
		}
	}
	if len(c.log) > maxLog {
		drop := len(c.log) - maxLog/2
		c.logStart = c.log[drop-1].seq
		c.log = slices.Clone(c.log[drop:])
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
	if r := c.respondLocked(w, c.candidatesLocked(w), false); r != nil {
		w.out <- r
		delete(c.watches, w)
		c.setHeldBackLocked(w, false)
	} else {
		c.setHeldBackLocked(w, len(w.s.held) > 0)
	}
}

// candidatesLocked lists the names that may differ for w's stream: those
// logged since it was answered, or, when the log no longer goes back that
// far (a large change truncates it), every name it has or may want.
func (c *deltaCache) candidatesLocked(w *deltaWatch) []string {
	if w.s.seq >= c.logStart {
		return c.sinceLocked(w.s.seq)
	}
	c.fullRuns++
	out := slices.Collect(maps.Keys(w.s.versions))
	if w.sub.IsWildcard() {
		return append(out, slices.Collect(maps.Keys(c.items))...)
	}
	return append(out, slices.Collect(maps.Keys(w.sub.SubscribedResources()))...)
}

// sinceLocked lists the names logged after seq.
func (c *deltaCache) sinceLocked(seq uint64) []string {
	i, _ := slices.BinarySearchFunc(c.log, seq+1, func(e logEntry, seq uint64) int { return cmp.Compare(e.seq, seq) })
	out := make([]string, 0, len(c.log)-i)
	for _, e := range c.log[i:] {
		out = append(out, e.name)
	}
	return out
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
	returned := sub.ReturnedResources()
	var candidates []string
	if s := c.streams[mapID(returned)]; s != nil && s.seq >= c.logStart {
		w.s = s
		candidates = c.sinceLocked(s.seq)
		candidates = append(candidates, req.GetResourceNamesSubscribe()...)
		candidates = append(candidates, req.GetResourceNamesUnsubscribe()...)
	} else {
		// Unknown: take over a copy of the stream's map and compare all.
		c.fullRuns++
		w.s = &sent{versions: maps.Clone(returned)}
		if w.s.versions == nil {
			w.s.versions = map[string]string{}
		}
		c.streams[mapID(w.s.versions)] = w.s
		candidates = slices.Collect(maps.Keys(w.s.versions))
		if sub.IsWildcard() {
			candidates = append(candidates, slices.Collect(maps.Keys(c.items))...)
		} else {
			candidates = append(candidates, slices.Collect(maps.Keys(sub.SubscribedResources()))...)
		}
	}
	w.s.used = c.now()
	// Envoy waits for an answer to its first wildcard request, even an
	// empty one, to finish initialising.
	first := sub.IsWildcard() && req.GetResponseNonce() == ""
	if r := c.respondLocked(w, candidates, first); r != nil {
		out <- r
		return func() {}, nil
	}
	c.watches[w] = struct{}{}
	c.setHeldBackLocked(w, len(w.s.held) > 0)
	return func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.setHeldBackLocked(w, false)
		c.mu.Unlock()
	}, nil
}

// respondLocked builds the response of w for the candidate names, or nil
// when none of them differs from what the stream has (and !always). It
// records what it sends in the stream's map.
func (c *deltaCache) respondLocked(w *deltaWatch, candidates []string, always bool) *deltaResponse {
	r := &deltaResponse{req: w.req, version: strconv.FormatUint(c.seq, 10), returned: w.s.versions}
	seen := make(map[string]bool, len(candidates))
	node := w.req.GetNode().GetId()
	// Names held back before are looked at again with the new ones.
	for n := range w.s.held {
		candidates = append(candidates, n)
	}
	wild := w.sub.IsWildcard()
	subscribed := w.sub.SubscribedResources()
	for _, n := range candidates {
		if seen[n] {
			continue
		}
		seen[n] = true
		if b := c.needs[n]; b != nil && c.now().After(b.deadline) {
			delete(c.needs, n) // passed by everyone, as all before it
		} else if b != nil && c.passes != nil && !c.passes(node, b) {
			if w.s.held == nil {
				w.s.held = map[string]struct{}{}
			}
			w.s.held[n] = struct{}{}
			continue
		}
		delete(w.s.held, n)
		_, wanted := subscribed[n]
		wanted = wanted || wild
		it := c.items[n]
		known, had := w.s.versions[n]
		switch {
		case it != nil && wanted && (!had || known != it.version):
			r.items = append(r.items, named{n, it})
		case it == nil && had:
			r.removed = append(r.removed, n)
		}
	}
	if len(r.items) == 0 && len(r.removed) == 0 && !always {
		w.s.seq = c.seq
		return nil
	}
	for _, x := range r.items {
		w.s.versions[x.name] = x.it.version
	}
	for _, n := range r.removed {
		delete(w.s.versions, n)
	}
	w.s.seq = c.seq
	slices.SortFunc(r.items, func(a, b named) int { return cmp.Compare(a.name, b.name) })
	slices.Sort(r.removed)
	return r
}

// forgetLocked drops streams not heard from in forgetAfter.
func (c *deltaCache) forgetLocked() {
	now := c.now()
	if now.Sub(c.forgot) < forgetAfter/10 {
		return // a sweep per watch would cost the fleet's size each time
	}
	c.forgot = now
	for id, s := range c.streams {
		if now.Sub(s.used) > forgetAfter {
			delete(c.streams, id)
		}
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

type named struct {
	name string
	it   *item
}

// deltaResponse is one delta response; returned is the stream's map.
type deltaResponse struct {
	req      *cache.DeltaRequest
	version  string
	items    []named
	removed  []string
	returned map[string]string

	once sync.Once
	resp *discovery.DeltaDiscoveryResponse
	err  error
}

func (r *deltaResponse) GetDeltaDiscoveryResponse() (*discovery.DeltaDiscoveryResponse, error) {
	r.once.Do(func() {
		out := &discovery.DeltaDiscoveryResponse{
			TypeUrl: r.req.GetTypeUrl(), SystemVersionInfo: r.version, RemovedResources: r.removed,
			Resources: make([]*discovery.Resource, 0, len(r.items)),
		}
		for _, x := range r.items {
			b, err := x.it.marshaled()
			if err != nil {
				r.err = err
				return
			}
			out.Resources = append(out.Resources, &discovery.Resource{
				Name: x.name, Version: x.it.version,
				Resource: &anypb.Any{TypeUrl: r.req.GetTypeUrl(), Value: b},
			})
		}
		r.resp = out
	})
	return r.resp, r.err
}

func (r *deltaResponse) GetDeltaRequest() *discovery.DeltaDiscoveryRequest { return r.req }
func (r *deltaResponse) GetSystemVersion() (string, error)                 { return r.version, nil }
func (r *deltaResponse) GetResponseVersion() string                        { return r.version }
func (r *deltaResponse) GetNextVersionMap() map[string]string              { return r.returned }
func (r *deltaResponse) GetReturnedResources() map[string]string           { return r.returned }
func (r *deltaResponse) GetContext() context.Context                       { return context.Background() }
