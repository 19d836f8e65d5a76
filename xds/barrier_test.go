package xds

import (
	"slices"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// connectHolding opens a delta stream for node holding listeners at the
// given versions, as a reconnecting Envoy announces them.
func connectHolding(tr *tracker, id int64, node string, held map[string]string) {
	tr.open(streamKey{delta: true, id: id}, "")
	tr.onDeltaRequest(id, &discovery.DeltaDiscoveryRequest{
		Node: &core.Node{Id: node}, TypeUrl: listenerType, InitialResourceVersions: held,
	})
}

// A barrier asks only for what is still served as it says: a resource
// changed since, or removed and then served again, is a later barrier's
// business. Otherwise a name deleted and created again (a KIngress
// re-created with its host) would hold back every later removal for that
// Envoy until the barrier's deadline.
func TestBarrierSkipsWhatWasSuperseded(t *testing.T) {
	tr := newTracker(newMetrics(nil))
	connectHolding(tr, 1, "envoy-1", map[string]string{"l": "v2"})
	serve := func(name, version string) { tr.serve(listenerType, map[string]string{name: version}) }
	now := time.Now()
	seq := uint64(0)
	at := func(refs ...ref) *barrier {
		seq++
		return &barrier{refs: refs, deadline: now.Add(time.Minute), chain: heldChain, seq: seq}
	}

	removed := at(ref{typeURL: listenerType, name: "l"}) // "l" removed, then...
	if tr.passes("envoy-1", removed, now) {
		t.Fatal("a node still holding a removed name passes")
	}
	serve("l", "v2") // ...served again: that removal is superseded
	if !tr.passes("envoy-1", removed, now) {
		t.Error("a removal superseded by the name served again still holds the node back")
	}
	if !tr.passes("envoy-1", at(ref{typeURL: listenerType, name: "l", version: "v1"}), now) {
		t.Error("a version superseded by a later one still holds the node back")
	}
	serve("l", "v3")
	if tr.passes("envoy-1", at(ref{typeURL: listenerType, name: "l", version: "v3"}), now) {
		t.Error("a node passes a version it does not hold")
	}
	if !tr.passes("envoy-1", at(ref{typeURL: listenerType, name: "l", version: "v3"}), now.Add(2*time.Minute)) {
		t.Error("a barrier past its deadline still holds the node back")
	}
}

// What a node passed is remembered, and forgotten when it reconnects: a
// restarted Envoy (same node id, nothing held) must hold the clusters
// again before it gets the routes using them.
func TestPassedIsForgottenOnReconnect(t *testing.T) {
	tr := newTracker(newMetrics(nil))
	connectHolding(tr, 1, "envoy-1", map[string]string{"l": "v1"})
	tr.serve(listenerType, map[string]string{"l": "v1"})
	now := time.Now()
	b := &barrier{refs: []ref{{typeURL: listenerType, name: "l", version: "v1"}}, deadline: now.Add(time.Minute), chain: warmedChain, seq: 1}
	if !tr.passes("envoy-1", b, now) {
		t.Fatal("a node holding the barrier's resource does not pass it")
	}
	tr.closed(streamKey{delta: true, id: 1})
	connectHolding(tr, 2, "envoy-1", nil)
	if tr.passes("envoy-1", b, now) {
		t.Error("a node that reconnected holding nothing passes what it passed before")
	}
}

// Readiness remembers per node the newest round it holds, and looks again
// when the node moves or the rounds change, never serving a stale answer.
func TestSyncedFollowsMovesAndRounds(t *testing.T) {
	tr := newTracker(newMetrics(nil))
	connectHolding(tr, 1, "envoy-1", map[string]string{"l": "v1"})
	round := func(gen uint64, version string) appliedRound {
		return appliedRound{gen: gen, refs: []ref{{typeURL: listenerType, name: "l", version: version}}}
	}
	rounds := appliedRounds{list: []appliedRound{round(1, "v1")}, version: 1}
	check := func(what string, gen uint64, want bool) {
		t.Helper()
		synced, _ := tr.synced(gen, rounds, peerSet{})
		if got := len(synced) == 1; got != want {
			t.Errorf("%s: synced at %d = %v, want %v", what, gen, got, want)
		}
	}
	check("holding round 1", 1, true)
	check("asked again", 1, true)
	rounds = appliedRounds{list: []appliedRound{round(1, "v1"), round(2, "v2")}, version: 2}
	check("round 2 applied, not held", 2, false)
	check("round 1 still held", 1, true)

	tr.onDeltaResponse(1, &discovery.DeltaDiscoveryResponse{TypeUrl: listenerType, Nonce: "7",
		Resources: []*discovery.Resource{{Name: "l", Version: "v2"}}})
	check("sent, not yet ACKed", 2, false)
	tr.onDeltaRequest(1, &discovery.DeltaDiscoveryRequest{TypeUrl: listenerType, ResponseNonce: "7"})
	check("ACKed", 2, true)
	rounds = appliedRounds{list: []appliedRound{round(2, "v2"), round(3, "v2")}, version: 3}
	check("a new round it holds already, without moving", 3, true)
}

// Behind remembers its answer per refs and looks again only at the nodes
// that moved, joined or left, and at the peers when they answer anew.
func TestBehindFollowsMoves(t *testing.T) {
	tr := newTracker(newMetrics(nil))
	connectHolding(tr, 1, "envoy-1", map[string]string{"l": "v1"})
	connectHolding(tr, 2, "envoy-2", map[string]string{"l": "v2"})
	refs := []ref{{typeURL: listenerType, name: "l", version: "v2"}}
	peers := peerSet{views: map[string]*nodeView{"peer-1": {types: map[string]*typeState{}}}, version: 1}
	check := func(what string, want ...string) {
		t.Helper()
		if got := tr.behind(refs, peers); !slices.Equal(got, want) {
			t.Errorf("%s: behind = %v, want %v", what, got, want)
		}
	}
	check("first", "envoy-1", "peer-1")
	check("asked again", "envoy-1", "peer-1")

	tr.onDeltaResponse(1, &discovery.DeltaDiscoveryResponse{TypeUrl: listenerType, Nonce: "3",
		Resources: []*discovery.Resource{{Name: "l", Version: "v2"}}})
	tr.onDeltaRequest(1, &discovery.DeltaDiscoveryRequest{TypeUrl: listenerType, ResponseNonce: "3"})
	check("envoy-1 ACKed", "peer-1")

	connectHolding(tr, 3, "envoy-3", nil)
	check("envoy-3 joined holding nothing", "envoy-3", "peer-1")
	tr.closed(streamKey{delta: true, id: 3})
	check("envoy-3 left", "peer-1")

	peers = peerSet{views: map[string]*nodeView{"peer-1": {types: map[string]*typeState{listenerType: {acked: ackedState{plain: map[string]string{"l": "v2"}}}}}}, version: 2}
	check("the peer's Envoy caught up")
}
