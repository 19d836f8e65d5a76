package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// What the tracker says a delta node ACKed, kept relative to the served
// table, is what a plain map of every ACKed version says (the model),
// whatever the order of changes served, responses, ACKs, NACKs,
// subscription changes and pauses long enough for the log to drop what
// the node lacks; and a node in sync keeps no exception.
func TestAckedFollowsAPlainMap(t *testing.T) {
	for _, wildcard := range []bool{true, false} {
		t.Run(fmt.Sprint("wildcard=", wildcard), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			tr := newTracker(newMetrics(nil))
			tr.tableLocked(routeType).maxLog = 8
			name := func() string { return fmt.Sprintf("r%d", rng.IntN(30)) }
			served := map[string]string{}
			model := map[string]string{}
			subscribed := map[string]bool{}
			wants := func(n string) bool { return wildcard || subscribed[n] }

			tr.open(streamKey{delta: true, id: 1}, "")
			initial := map[string]string{"r1": "old", "r2": "v0"}
			maps.Copy(model, initial)
			first := &discovery.DeltaDiscoveryRequest{Node: &core.Node{Id: "envoy"}, TypeUrl: routeType, InitialResourceVersions: initial}
			if !wildcard {
				first.ResourceNamesSubscribe = []string{"r1", "r2", "r3"}
				subscribed["r1"], subscribed["r2"], subscribed["r3"] = true, true, true
			}
			tr.onDeltaRequest(1, first)

			nonce := 0
			type response struct {
				nonce     string
				resources map[string]string
				removed   []string
			}
			var inFlight []response
			ts := func() *typeState { return tr.streams[streamKey{delta: true, id: 1}].types[routeType] }
			for step := 0; step < 5000; step++ {
				switch k := rng.IntN(12); {
				case k < 4: // the server serves a change
					n := name()
					if rng.IntN(4) == 0 {
						delete(served, n)
						tr.serve(routeType, map[string]string{n: ""})
					} else {
						v := fmt.Sprint("v", step)
						served[n] = v
						tr.serve(routeType, map[string]string{n: v})
					}
				case k < 7: // a response: some of what is served, some removals
					nonce++
					r := response{nonce: fmt.Sprint(nonce), resources: map[string]string{}}
					resp := &discovery.DeltaDiscoveryResponse{TypeUrl: routeType, Nonce: r.nonce}
					for i := rng.IntN(4); i > 0; i-- {
						n := name()
						if v, ok := served[n]; ok && wants(n) {
							r.resources[n] = v
							resp.Resources = append(resp.Resources, &discovery.Resource{Name: n, Version: v})
						} else if !ok {
							r.removed = append(r.removed, n)
							resp.RemovedResources = append(resp.RemovedResources, n)
						}
					}
					tr.onDeltaResponse(1, resp)
					inFlight = append(inFlight, r)
				case k < 10 && len(inFlight) > 0: // the oldest answered
					r := inFlight[0]
					inFlight = inFlight[1:]
					req := &discovery.DeltaDiscoveryRequest{TypeUrl: routeType, ResponseNonce: r.nonce}
					if rng.IntN(6) == 0 {
						req.ErrorDetail = &status.Status{Message: "rejected"}
					} else {
						for n, v := range r.resources {
							model[n] = v
						}
						for _, n := range r.removed {
							delete(model, n)
						}
					}
					tr.onDeltaRequest(1, req)
				case k == 10 && !wildcard:
					n := name()
					req := &discovery.DeltaDiscoveryRequest{TypeUrl: routeType}
					if rng.IntN(2) == 0 {
						req.ResourceNamesSubscribe = []string{n}
						subscribed[n] = true
					} else {
						req.ResourceNamesUnsubscribe = []string{n}
						delete(subscribed, n)
						delete(model, n)
					}
					tr.onDeltaRequest(1, req)
				}
				tr.mu.Lock()
				got := ts().ackedAll()
				for i := 0; i < 30; i++ {
					n := fmt.Sprintf("r%d", i)
					v, ok := ts().ackedOf(n)
					if mv, mok := model[n]; v != mv || ok != mok {
						tr.mu.Unlock()
						t.Fatalf("step %d: %s acked %q %v, want %q %v", step, n, v, ok, mv, mok)
					}
				}
				exceptions := len(ts().acked.ex)
				tr.mu.Unlock()
				if !maps.Equal(got, model) {
					t.Fatalf("step %d: acked %v, want %v", step, got, model)
				}
				inSync := len(inFlight) == 0
				for n, v := range served {
					inSync = inSync && (!wants(n) || model[n] == v)
				}
				for n := range model {
					_, ok := served[n]
					inSync = inSync && ok && wants(n)
				}
				if inSync && exceptions > 0 {
					t.Fatalf("step %d: in sync with %d exceptions", step, exceptions)
				}
			}
			if tr.served[routeType].dropped == 0 {
				t.Fatal("the log never dropped a change")
			}
		})
	}
}
