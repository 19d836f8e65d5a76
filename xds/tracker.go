package xds

import (
	"maps"
	"slices"
	"sync"
	"time"
	"unique"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// The tracker follows what each stream was sent and what its Envoy ACKed
// or NACKed (from the server's callbacks): the state machine per stream
// and type. What a node holds is read through nodes.go; whether nodes hold
// a set of versions, through holds.go.

type streamKey struct {
	delta bool
	id    int64
}

// tracker follows every xDS stream through go-control-plane's callbacks:
// what was sent under which nonce, and which nonce the Envoy ACKed or NACKed.
type tracker struct {
	m      *metrics
	now    func() time.Time
	hashes hashMemo

	mu      sync.Mutex
	served  map[string]*versionLog // by type: what the server serves (served.go)
	streams map[streamKey]*streamState
	nodes   map[string]*nodeEntry  // by node id, those with a stream
	moved   map[string]struct{}    // nodes that ACKed, NACKed, came or went since takeMoved
	epoch   uint64                 // counts the nodes' moves
	behinds map[string]*behindMemo // holds.go
	subs    map[chan struct{}]struct{}
}

type streamState struct {
	node        *core.Node
	delta       bool
	defaultType string
	types       map[string]*typeState
}

type typeState struct {
	delta      bool
	legacy     bool // subscription started empty: wildcard until names are given
	wildcard   bool
	subscribed map[string]struct{}

	table       *versionLog
	acked       ackedState
	errors      map[string]ResourceError
	lastNack    *Nack
	lastUpdated time.Time

	pending map[string]*sentResponse // by nonce

	// SotW only: what the node holds after our responses, and its multiset
	// hash, which becomes the response's version_info.
	sent    map[string]string
	sentSum uint64
}

type sentResponse struct {
	seq       int64
	full      bool
	resources map[string]string
	removed   []string
}

func newTracker(m *metrics) *tracker {
	return &tracker{
		m:       m,
		now:     time.Now,
		served:  map[string]*versionLog{},
		streams: map[streamKey]*streamState{},
		nodes:   map[string]*nodeEntry{},
		moved:   map[string]struct{}{},
		behinds: map[string]*behindMemo{},
		subs:    map[chan struct{}]struct{}{},
	}
}

func newTypeState(delta bool, table *versionLog) *typeState {
	return &typeState{
		delta:      delta,
		table:      table,
		subscribed: map[string]struct{}{},
		errors:     map[string]ResourceError{},
		pending:    map[string]*sentResponse{},
		sent:       map[string]string{},
	}
}

func (t *tracker) typeStateLocked(st *streamState, typeURL string) (*typeState, bool) {
	ts, ok := st.types[typeURL]
	if !ok {
		ts = newTypeState(st.delta, t.tableLocked(typeURL))
		st.types[typeURL] = ts
	}
	return ts, !ok
}

// subscribe returns a channel that receives a value (coalesced) whenever a
// node ACKs, NACKs, connects or disconnects.
func (t *tracker) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	t.mu.Lock()
	t.subs[ch] = struct{}{}
	t.mu.Unlock()
	return ch, func() {
		t.mu.Lock()
		delete(t.subs, ch)
		t.mu.Unlock()
	}
}

// takeMoved returns the nodes that ACKed, NACKed, connected or left since
// it was last called.
func (t *tracker) takeMoved() map[string]struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.moved
	t.moved = map[string]struct{}{}
	return m
}

// changedLocked records that what st's node holds or asks for may have
// changed; the caller notifies.
func (t *tracker) changedLocked(st *streamState) {
	if st.node == nil {
		return
	}
	t.moved[st.node.GetId()] = struct{}{}
	if e := t.nodes[st.node.GetId()]; e != nil {
		t.epoch++
		e.movedAt = t.epoch
	}
}

func (t *tracker) notify() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.notifyLocked()
}

func (t *tracker) notifyLocked() {
	for ch := range t.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (t *tracker) open(key streamKey, typeURL string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[key] = &streamState{delta: key.delta, defaultType: typeURL, types: map[string]*typeState{}}
}

func (t *tracker) closed(key streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.streams[key]
	if !ok {
		return
	}
	delete(t.streams, key)
	if st.node != nil {
		id := st.node.GetId()
		t.moved[id] = struct{}{}
		t.epoch++
		if e := t.nodes[id]; e != nil {
			e.streams = slices.DeleteFunc(e.streams, func(o *streamState) bool { return o == st })
			if len(e.streams) == 0 {
				delete(t.nodes, id)
			} else {
				*e = nodeEntry{streams: e.streams, movedAt: t.epoch} // passed nothing on this footing
			}
		}
		t.m.connected.Set(float64(len(t.nodes)))
	}
	t.notifyLocked()
}

// setNodeLocked files st under its node, which has passed no barrier with
// this stream.
func (t *tracker) setNodeLocked(st *streamState, node *core.Node) {
	if st.node != nil || node == nil {
		return
	}
	st.node = node
	e := t.nodes[node.GetId()]
	if e == nil {
		e = &nodeEntry{}
		t.nodes[node.GetId()] = e
	}
	t.epoch++
	*e = nodeEntry{streams: append(e.streams, st), movedAt: t.epoch}
	t.moved[node.GetId()] = struct{}{}
	t.m.connected.Set(float64(len(t.nodes)))
	t.notifyLocked()
}

// onRequest handles a SotW request: its resource names are the whole
// subscription, and a response nonce makes it an ACK or (with error_detail)
// a NACK of that response.
func (t *tracker) onRequest(id int64, req *discovery.DiscoveryRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts, typeURL, first := t.requestStateLocked(streamKey{id: id}, req.GetNode(), req.GetTypeUrl())
	if ts == nil {
		return
	}
	names := req.GetResourceNames()
	switch {
	case first && len(names) == 0:
		ts.legacy, ts.wildcard = true, true
	case ts.legacy && len(names) == 0:
	default:
		ts.legacy, ts.wildcard = false, false
		clear(ts.subscribed)
		for _, n := range names {
			if n == "*" {
				ts.wildcard = true
			} else {
				ts.subscribed[n] = struct{}{}
			}
		}
	}
	if nonce := req.GetResponseNonce(); nonce != "" {
		if p := ts.takePending(nonce); p != nil {
			t.answerLocked(ts, typeURL, p, req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil, req.GetVersionInfo())
		}
	}
	ts.prune()
	t.notifyLocked()
}

// requestStateLocked records the node of a stream's request and returns
// the stream's state for the request's type (the stream's type when the
// request names none); nil for an unknown stream.
func (t *tracker) requestStateLocked(key streamKey, node *core.Node, typeURL string) (ts *typeState, _ string, first bool) {
	st := t.streams[key]
	if st == nil {
		return nil, "", false
	}
	t.setNodeLocked(st, node)
	t.changedLocked(st)
	if typeURL == "" {
		typeURL = st.defaultType
	}
	ts, first = t.typeStateLocked(st, typeURL)
	return ts, typeURL, first
}

// onDeltaRequest handles an incremental request: subscription changes, and
// an ACK or NACK when it carries a response nonce.
func (t *tracker) onDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ts, typeURL, first := t.requestStateLocked(streamKey{delta: true, id: id}, req.GetNode(), req.GetTypeUrl())
	if ts == nil {
		return
	}
	// Each stream's subscriptions (ours and go-control-plane's, which
	// reads the request after us) share one copy of each name, not one
	// per request that named it.
	for i, n := range req.GetResourceNamesSubscribe() {
		req.ResourceNamesSubscribe[i] = unique.Make(n).Value()
	}
	if first {
		// A reconnecting Envoy still runs what it had; record it as held.
		for n, v := range req.GetInitialResourceVersions() {
			ts.setAckedRaw(n, holding{version: v, has: true})
		}
		if len(req.GetResourceNamesSubscribe()) == 0 {
			ts.legacy, ts.wildcard = true, true
		}
	}
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			ts.setWildcard(true)
		} else if !ts.wants(n) {
			ts.subscribed[n] = struct{}{}
			ts.subscriptionChanged(n)
		} else {
			ts.subscribed[n] = struct{}{}
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			ts.setWildcard(false)
			ts.legacy = false
			continue
		}
		delete(ts.subscribed, n)
		ts.subscriptionChanged(n)
		delete(ts.errors, n)
	}
	if nonce := req.GetResponseNonce(); nonce != "" {
		if p := ts.takePending(nonce); p != nil {
			t.answerLocked(ts, typeURL, p, req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil, "")
		}
	}
	t.notifyLocked()
}

func (t *tracker) answerLocked(ts *typeState, typeURL string, p *sentResponse, msg string, nack bool, version string) {
	now := t.now()
	ts.lastUpdated = now
	if !nack {
		t.m.acks.WithLabelValues(typeLabel(typeURL)).Inc()
		ts.ackApply(p)
		for n := range p.resources {
			delete(ts.errors, n)
		}
		for _, n := range p.removed {
			delete(ts.errors, n)
		}
		return
	}
	t.m.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
	// A SotW response repeats resources the node already runs; those are
	// not what it rejected. Blame the new and changed ones (all, if none).
	blamed := map[string]string{}
	for n, v := range p.resources {
		if held, _ := ts.ackedOf(n); held != v {
			blamed[n] = v
		}
	}
	if len(blamed) == 0 {
		blamed = p.resources
	}
	names := slices.Sorted(maps.Keys(blamed))
	ts.lastNack = &Nack{Error: msg, Version: version, Resources: names, Time: now}
	for n, v := range blamed {
		ts.errors[n] = ResourceError{Version: v, Error: msg, Time: now}
	}
}

// takePending removes the response sent under nonce, and any older one
// still waiting (Envoy answers responses in order; older ones were skipped).
func (ts *typeState) takePending(nonce string) *sentResponse {
	p, ok := ts.pending[nonce]
	if !ok {
		return nil
	}
	for n, q := range ts.pending {
		if q.seq <= p.seq {
			delete(ts.pending, n)
		}
	}
	return p
}

func (ts *typeState) wants(name string) bool {
	if ts.wildcard {
		return true
	}
	_, ok := ts.subscribed[name]
	return ok
}

// prune forgets resources the node no longer subscribes to.
func (ts *typeState) prune() {
	if ts.wildcard {
		return
	}
	for n := range ts.acked.ex {
		if !ts.wants(n) {
			delete(ts.acked.ex, n)
		}
	}
	for n := range ts.errors {
		if !ts.wants(n) {
			delete(ts.errors, n)
		}
	}
	for n, v := range ts.sent {
		if !ts.wants(n) {
			delete(ts.sent, n)
			ts.sentSum -= entryHash(n, v)
		}
	}
}
