package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// A barrier asks only for what is still served as it says: a resource
// changed since, or removed and then served again, is a later barrier's
// business. Otherwise a name deleted and created again (a KIngress
// re-created with its host) would hold back every later removal for that
// Envoy until the barrier aged out.
func TestBarrierSkipsWhatWasSuperseded(t *testing.T) {
	tr := newTracker(newMetrics(nil))
	key := streamKey{delta: true, id: 1}
	tr.open(key, "")
	tr.onDeltaRequest(1, &discovery.DeltaDiscoveryRequest{
		Node: &core.Node{Id: "envoy-1"}, TypeUrl: listenerType,
		InitialResourceVersions: map[string]string{"l": "v2"},
	})
	served := map[string]string{}
	current := func(_, name string) string { return served[name] }

	removed := []ref{{typeURL: listenerType, name: "l"}} // "l" removed, then...
	if tr.nodeHolds("envoy-1", removed, current) {
		t.Fatal("a node still holding a removed name passes")
	}
	served["l"] = "v2" // ...served again: that removal is superseded
	if !tr.nodeHolds("envoy-1", removed, current) {
		t.Error("a removal superseded by the name served again still holds the node back")
	}
	changed := []ref{{typeURL: listenerType, name: "l", version: "v1"}}
	if !tr.nodeHolds("envoy-1", changed, current) {
		t.Error("a version superseded by a later one still holds the node back")
	}
	if tr.nodeHolds("envoy-1", []ref{{typeURL: listenerType, name: "l", version: "v3"}}, func(_, _ string) string { return "v3" }) {
		t.Error("a node passes a version it does not hold")
	}
}
