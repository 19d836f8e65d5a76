package xds

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// NodeStatus is what one connected Envoy holds. ID is the Envoy's node id
// (its pod name), Cluster its node cluster (the gateway name).
type NodeStatus struct {
	ID      string
	Cluster string
	Delta   bool // the node uses incremental xDS
	Types   map[string]TypeStatus

	node *core.Node
}

// TypeStatus is one node's state for one resource type.
type TypeStatus struct {
	// Acked maps each resource the node has accepted to its version (see
	// Version).
	Acked map[string]string
	// Wildcard is true if the node asked for all resources of the type;
	// otherwise Subscribed lists the names it asked for.
	Wildcard   bool
	Subscribed []string
	// Errors holds, per resource, the last rejection of it that a later
	// ACK has not cleared.
	Errors map[string]ResourceError
	// LastNack is the last rejected response of this type, if any.
	LastNack *Nack
	// LastUpdated is when the node last ACKed or NACKed this type.
	LastUpdated time.Time
}

// Nack is one response an Envoy rejected.
type Nack struct {
	Error     string    // Envoy's error_detail message
	Version   string    // SotW: the version_info Envoy keeps running
	Resources []string  // the new or changed resources the response carried
	Time      time.Time // when the NACK arrived
}

// ResourceError is a rejection of one resource at one version.
type ResourceError struct {
	Version string
	Error   string
	Time    time.Time
}

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
	streams map[streamKey]*streamState
	nodes   map[string]int // node id -> open streams
	subs    map[chan struct{}]struct{}
}

type streamState struct {
	node        *core.Node
	defaultType string
	types       map[string]*typeState
}

type typeState struct {
	legacy     bool // subscription started empty: wildcard until names are given
	wildcard   bool
	subscribed map[string]struct{}

	acked       map[string]string
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
		streams: map[streamKey]*streamState{},
		nodes:   map[string]int{},
		subs:    map[chan struct{}]struct{}{},
	}
}

func newTypeState() *typeState {
	return &typeState{
		subscribed: map[string]struct{}{},
		acked:      map[string]string{},
		errors:     map[string]ResourceError{},
		pending:    map[string]*sentResponse{},
		sent:       map[string]string{},
	}
}

func (st *streamState) typeState(typeURL string) (*typeState, bool) {
	ts, ok := st.types[typeURL]
	if !ok {
		ts = newTypeState()
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
	t.streams[key] = &streamState{defaultType: typeURL, types: map[string]*typeState{}}
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
		if t.nodes[id]--; t.nodes[id] <= 0 {
			delete(t.nodes, id)
		}
		t.m.connected.Set(float64(len(t.nodes)))
	}
	t.notifyLocked()
}

func (t *tracker) setNodeLocked(st *streamState, node *core.Node) {
	if st.node != nil || node == nil {
		return
	}
	st.node = node
	t.nodes[node.GetId()]++
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
	if typeURL == "" {
		typeURL = st.defaultType
	}
	ts, first = st.typeState(typeURL)
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
	if first {
		// A reconnecting Envoy still runs what it had; record it as held.
		maps.Copy(ts.acked, req.GetInitialResourceVersions())
		if len(req.GetResourceNamesSubscribe()) == 0 {
			ts.legacy, ts.wildcard = true, true
		}
	}
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			ts.wildcard = true
		} else {
			ts.subscribed[n] = struct{}{}
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			ts.wildcard, ts.legacy = false, false
			continue
		}
		delete(ts.subscribed, n)
		delete(ts.acked, n)
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
		if p.full {
			clear(ts.acked)
		}
		for n, v := range p.resources {
			ts.acked[n] = v
			delete(ts.errors, n)
		}
		for _, n := range p.removed {
			delete(ts.acked, n)
			delete(ts.errors, n)
		}
		return
	}
	t.m.nacks.WithLabelValues(typeLabel(typeURL)).Inc()
	// A SotW response repeats resources the node already runs; those are
	// not what it rejected. Blame the new and changed ones (all, if none).
	blamed := map[string]string{}
	for n, v := range p.resources {
		if ts.acked[n] != v {
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
	for n := range ts.acked {
		if !ts.wants(n) {
			delete(ts.acked, n)
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

// entryHash feeds a multiset hash (a sum), so a type's version can be kept
// up to date per changed resource instead of rehashing everything.
func entryHash(name, version string) uint64 {
	// FNV-1a, inline to avoid allocating a hash.Hash per entry.
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * prime
	}
	h *= prime // the separator, a zero byte
	for i := 0; i < len(version); i++ {
		h = (h ^ uint64(version[i])) * prime
	}
	return h
}

// onResponse records a SotW response about to be sent and sets its
// version_info to a hash of what the node holds once it applies it, so the
// same state has the same version on every server. go-control-plane would
// otherwise send its cache's update counter. The callback runs right before
// the message is sent, and the message is this stream's own.
func (t *tracker) onResponse(id int64, resp *discovery.DiscoveryResponse) {
	res := make(map[string]string, len(resp.GetResources()))
	for _, a := range resp.GetResources() {
		name, version := t.hashes.get(a.GetValue())
		res[name] = version
	}
	typeURL := resp.GetTypeUrl()
	t.m.pushes.WithLabelValues(typeLabel(typeURL)).Inc()

	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[streamKey{id: id}]
	if st == nil {
		return
	}
	ts, _ := st.typeState(typeURL)
	full := sotwFullState(typeURL)
	if full {
		clear(ts.sent)
		ts.sentSum = 0
	}
	for n, v := range res {
		if old, ok := ts.sent[n]; ok {
			ts.sentSum -= entryHash(n, old)
		}
		ts.sent[n] = v
		ts.sentSum += entryHash(n, v)
	}
	resp.VersionInfo = fmt.Sprintf("%016x", ts.sentSum)
	seq, _ := strconv.ParseInt(resp.GetNonce(), 10, 64)
	ts.pending[resp.GetNonce()] = &sentResponse{seq: seq, full: full, resources: res}
}

func (t *tracker) onDeltaResponse(id int64, resp *discovery.DeltaDiscoveryResponse) {
	typeURL := resp.GetTypeUrl()
	t.m.pushes.WithLabelValues(typeLabel(typeURL)).Inc()
	res := make(map[string]string, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		res[r.GetName()] = r.GetVersion()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[streamKey{delta: true, id: id}]
	if st == nil {
		return
	}
	ts, _ := st.typeState(typeURL)
	seq, _ := strconv.ParseInt(resp.GetNonce(), 10, 64)
	ts.pending[resp.GetNonce()] = &sentResponse{seq: seq, resources: res, removed: resp.GetRemovedResources()}
}

// resourceName reads field 1 of an encoded resource: the name of a Cluster,
// Listener, RouteConfiguration, ScopedRouteConfiguration and Secret, the
// cluster_name of a ClusterLoadAssignment. Deterministic encoding puts it
// first.
func resourceName(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

// nodeView merges the streams of one node (one ADS stream, or one stream
// per type without ADS).
type nodeView struct {
	node  *core.Node
	delta bool
	types map[string]*typeState
}

func (t *tracker) viewsLocked() map[string]*nodeView {
	out := map[string]*nodeView{}
	for key, st := range t.streams {
		if st.node == nil {
			continue
		}
		v, ok := out[st.node.GetId()]
		if !ok {
			v = &nodeView{node: st.node, types: map[string]*typeState{}}
			out[st.node.GetId()] = v
		}
		v.delta = v.delta || key.delta
		maps.Copy(v.types, st.types)
	}
	return out
}

func (t *tracker) snapshot() []NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	views := t.viewsLocked()
	out := make([]NodeStatus, 0, len(views))
	for _, v := range views {
		ns := NodeStatus{ID: v.node.GetId(), Cluster: v.node.GetCluster(), Delta: v.delta, Types: map[string]TypeStatus{}, node: v.node}
		for typeURL, ts := range v.types {
			s := TypeStatus{
				Acked:       maps.Clone(ts.acked),
				Wildcard:    ts.wildcard,
				Subscribed:  slices.Sorted(maps.Keys(ts.subscribed)),
				Errors:      maps.Clone(ts.errors),
				LastUpdated: ts.lastUpdated,
			}
			if ts.lastNack != nil {
				n := *ts.lastNack
				s.LastNack = &n
			}
			ns.Types[typeURL] = s
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

func (t *tracker) nodeIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Keys(t.nodes))
}

// Rejection is a standing rejection by one node of one resource.
type Rejection struct {
	Node, TypeURL, Name string
	ResourceError
}

// rejections walks only the error maps: the controller asks on every
// Envoy event, so it must not copy what the nodes hold.
func (t *tracker) rejections() []Rejection {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Rejection
	for id, v := range t.viewsLocked() {
		for typeURL, ts := range v.types {
			for name, e := range ts.errors {
				out = append(out, Rejection{Node: id, TypeURL: typeURL, Name: name, ResourceError: e})
			}
		}
	}
	return out
}

func (t *tracker) acked(typeURL, name, version string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id, v := range t.viewsLocked() {
		if ts := v.types[typeURL]; ts != nil && ts.acked[name] == version {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// ref is a resource version that connected nodes must hold before the
// server moves on. For a cluster, eds names the endpoints it needs too.
type ref struct {
	typeURL, name, version string
	eds                    string
}

// settled reports whether every connected node holds (or has rejected)
// every ref that concerns it. Nodes found settled are added to done and not
// checked again: a node only moves forward, and one that reconnects gets
// the current state from the caches anyway.
func (t *tracker) settled(refs []ref, done map[string]bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := true
	for id, v := range t.viewsLocked() {
		if done[id] {
			continue
		}
		if v.holdsAll(refs) {
			done[id] = true
		} else {
			all = false
		}
	}
	return all
}

func (v *nodeView) holdsAll(refs []ref) bool {
	for _, r := range refs {
		if !v.holds(r) {
			return false
		}
	}
	return true
}

// synced splits nodes into those holding exactly (not rejecting) every ref
// of at least one of rounds, and the others.
func (t *tracker) synced(rounds [][]ref, others map[string]*nodeView) (synced, behind []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	views := t.viewsLocked()
	for id, v := range others {
		if _, ours := views[id]; !ours {
			views[id] = v
		}
	}
	for id, v := range views {
		if slices.ContainsFunc(rounds, v.holdsExactly) {
			synced = append(synced, id)
		} else {
			behind = append(behind, id)
		}
	}
	slices.Sort(synced)
	slices.Sort(behind)
	return synced, behind
}

func (v *nodeView) holdsExactly(refs []ref) bool {
	for _, r := range refs {
		ts := v.types[r.typeURL]
		if ts == nil || ts.acked[r.name] != r.version {
			return false
		}
	}
	return true
}

func (v *nodeView) holds(r ref) bool {
	ts := v.types[r.typeURL]
	if r.version == "" {
		// Removed: the node must have let it go.
		if ts == nil {
			return true
		}
		_, has := ts.acked[r.name]
		return !has
	}
	if r.typeURL == routeType || r.typeURL == scopeType {
		// Envoy asks for scopes and route configurations once it has the
		// listener using them, so a node that takes listeners must get
		// there.
		if v.types[listenerType] == nil {
			return true
		}
		if ts == nil {
			return false
		}
	} else if ts == nil || !ts.wants(r.name) {
		return true
	}
	if e, ok := ts.errors[r.name]; ok && e.Version == r.version {
		return true // rejected: waiting longer will not help
	}
	if ts.acked[r.name] != r.version {
		return false
	}
	if r.eds == "" {
		return true
	}
	ets := v.types[endpointType]
	if ets == nil {
		return false
	}
	_, acked := ets.acked[r.eds]
	_, failed := ets.errors[r.eds]
	return acked || failed
}

// waitSettled blocks until settled(refs), the timeout, or ctx is done. It
// reports whether the nodes settled. Checks run at most every checkEvery,
// however fast ACKs come in.
func (t *tracker) waitSettled(ctx context.Context, refs []ref, timeout time.Duration) bool {
	if len(refs) == 0 {
		return true
	}
	ch, cancel := t.subscribe()
	defer cancel()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	done := map[string]bool{}
	for {
		if t.settled(refs, done) {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
		select {
		case <-time.After(checkEvery):
		case <-ctx.Done():
			return false
		}
	}
}

// A round's refs are what it changed, so a check is cheap: ACKs that come
// together are still looked at together.
const checkEvery = time.Millisecond

// hashMemo remembers the name and version of encoded resources. SotW
// responses carry no per-resource versions, so each one would otherwise be
// hashed once per Envoy; but LinearCache encodes a resource once and every
// stream's response shares those bytes, so their address identifies them.
// Keys keep the arrays alive, so an address is never reused while it is a
// key, and the bytes are never modified. The memo is emptied when it holds
// more than memoMax entries or memoBytes bytes, which bounds the garbage it
// can keep alive.
type hashMemo struct {
	mu    sync.Mutex
	m     map[*byte]memoEntry
	bytes int
}

type memoEntry struct {
	n             int
	name, version string
}

const (
	memoMax   = 1 << 16
	memoBytes = 64 << 20
)

func (h *hashMemo) get(b []byte) (name, version string) {
	if len(b) == 0 {
		return "", cache.HashResource(b)
	}
	p := unsafe.SliceData(b)
	h.mu.Lock()
	e, ok := h.m[p]
	h.mu.Unlock()
	if ok && e.n == len(b) {
		return e.name, e.version
	}
	e = memoEntry{n: len(b), name: resourceName(b), version: cache.HashResource(b)}
	h.mu.Lock()
	if h.m == nil || len(h.m) >= memoMax || h.bytes+len(b) > memoBytes {
		h.m, h.bytes = make(map[*byte]memoEntry), 0
	}
	h.m[p] = e
	h.bytes += len(b)
	h.mu.Unlock()
	return e.name, e.version
}
