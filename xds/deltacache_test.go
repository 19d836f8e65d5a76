package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/proto"
)

// deltaStream plays the server's part for one stream: it keeps the
// subscription, applies each response's returned resources, and opens the
// next watch with the next request.
type deltaStream struct {
	t      *testing.T
	c      *deltaCache
	sub    stream.Subscription
	ch     chan cache.DeltaResponse
	cancel func()
	got    int               // responses
	holds  map[string]string // what the client holds, from the responses
}

func openStream(t *testing.T, c *deltaCache, subscribe []string) *deltaStream {
	s := &deltaStream{t: t, c: c, ch: make(chan cache.DeltaResponse, 1), holds: map[string]string{}}
	s.sub = stream.NewDeltaSubscription(subscribe, nil, nil, true)
	s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: c.typeURL, ResourceNamesSubscribe: subscribe})
	return s
}

func (s *deltaStream) watch(req *discovery.DeltaDiscoveryRequest) {
	cancel, err := s.c.CreateDeltaWatch(req, s.sub, s.ch)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cancel = cancel
}

// drain applies the pending responses, if any, ACKing each (which opens
// the next watch, which may be answered at once).
func (s *deltaStream) drain() {
	for {
		select {
		case r := <-s.ch:
			s.got++
			resp, err := r.GetDeltaDiscoveryResponse()
			if err != nil {
				s.t.Fatal(err)
			}
			for _, x := range resp.Resources {
				s.holds[x.Name] = x.Version
			}
			for _, n := range resp.RemovedResources {
				delete(s.holds, n)
			}
			s.sub.SetReturnedResources(r.GetReturnedResources())
			s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: s.c.typeURL, ResponseNonce: fmt.Sprint(s.got)})
		default:
			return
		}
	}
}

// reconnect opens a new stream that announces what the client holds, as
// Envoy does after losing its stream.
func (s *deltaStream) reconnect() {
	s.cancel()
	var subscribe []string
	if !s.sub.IsWildcard() {
		subscribe = slices.Sorted(maps.Keys(s.sub.SubscribedResources()))
	}
	select {
	case <-s.ch: // lost with the stream
	default:
	}
	s.sub = stream.NewDeltaSubscription(subscribe, nil, maps.Clone(s.holds), true)
	s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: s.c.typeURL, ResourceNamesSubscribe: subscribe, InitialResourceVersions: maps.Clone(s.holds)})
}

// change is a request changing the subscription (the server cancels the
// watch first, as go-control-plane's does).
func (s *deltaStream) change(subscribe, unsubscribe []string) {
	s.cancel()
	s.drain()
	s.cancel()
	for _, n := range unsubscribe {
		delete(s.holds, n) // as Envoy drops what it unsubscribes
	}
	s.sub.UpdateResourceSubscriptions(subscribe, unsubscribe)
	s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: s.c.typeURL, ResponseNonce: "n", ResourceNamesSubscribe: subscribe, ResourceNamesUnsubscribe: unsubscribe})
}

// The stream ends up with exactly what it subscribes to, at the current
// versions, whatever the order of updates, removals, subscription changes,
// reconnections and pauses (long enough for the log to drop what the
// stream lacks); and mostly through the log, not full comparisons.
func TestDeltaCacheConverges(t *testing.T) {
	for _, wildcard := range []bool{true, false} {
		t.Run(fmt.Sprint("wildcard=", wildcard), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			c := newDeltaCache(RouteType, newFullStateCache())
			c.log.maxLog = 16
			name := func() string { return fmt.Sprintf("r%d", rng.IntN(40)) }
			var subscribe []string
			if !wildcard {
				for i := 0; i < 20; i++ {
					subscribe = append(subscribe, name())
				}
			}
			s := openStream(t, c, subscribe)
			reconnects, paused := 0, 0
			for step := 0; step < 3000; step++ {
				switch k := rng.IntN(10); {
				case k < 6:
					set := map[string]entry{}
					for i := rng.IntN(3); i >= 0; i-- {
						m := route(name(), fmt.Sprint("c", rng.IntN(5)))
						set[m.Name] = entry{msg: m, version: Version(m)}
					}
					if err := c.update(set, nil, nil); err != nil {
						t.Fatal(err)
					}
				case k < 8:
					if err := c.update(nil, []string{name()}, nil); err != nil {
						t.Fatal(err)
					}
				case k == 8 && !wildcard:
					if rng.IntN(2) == 0 {
						s.change([]string{name()}, nil)
					} else {
						s.change(nil, []string{name()})
					}
				case k == 9 && rng.IntN(4) == 0:
					s.reconnect()
					reconnects++
				}
				if paused > 0 {
					paused-- // the client reads nothing meanwhile
					continue
				}
				if rng.IntN(50) == 0 {
					paused = 1 + rng.IntN(40)
				}
				s.drain()
				want := map[string]string{}
				for n, it := range c.items {
					if _, ok := s.sub.SubscribedResources()[n]; ok || s.sub.IsWildcard() {
						want[n] = it.version
					}
				}
				if got := s.holds; !maps.Equal(got, want) {
					t.Fatalf("step %d: stream holds %v, want %v", step, got, want)
				}
				// In sync, the cache keeps nothing per name for it.
				if st := c.streams[mapID(s.sub.ReturnedResources())]; st != nil && len(st.ex) > 0 {
					t.Fatalf("step %d: stream in sync has exceptions %v", step, st.ex)
				}
			}
			if s.got < 100 {
				t.Fatalf("only %d responses", s.got)
			}
			// A stream with no response yet is compared in full; after
			// that, its map is known.
			if c.fullRuns > 5+2*reconnects {
				t.Fatalf("%d full comparisons for %d responses and %d reconnections", c.fullRuns, s.got, reconnects)
			}
			t.Logf("%d responses, %d reconnections, %d full comparisons, log dropped up to %d", s.got, reconnects, c.fullRuns, c.log.start)
		})
	}
}

// Responses carry each resource with its version, and removals.
func TestDeltaCacheResponse(t *testing.T) {
	c := newDeltaCache(RouteType, cache.NewLinearCache(RouteType))
	a, b := route("a", "x"), route("b", "y")
	if err := c.update(map[string]entry{"a": {msg: a, version: Version(a)}, "b": {msg: b, version: Version(b)}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, c, nil)
	r := <-s.ch
	resp, err := r.GetDeltaDiscoveryResponse()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Resources) != 2 || resp.Resources[0].Name != "a" || resp.Resources[0].Version != Version(a) {
		t.Fatalf("first response: %v", resp.Resources)
	}
	var back routev3.RouteConfiguration
	if err := resp.Resources[1].Resource.UnmarshalTo(&back); err != nil || !proto.Equal(&back, b) {
		t.Fatalf("resource b: %v %v", &back, err)
	}
	s.sub.SetReturnedResources(r.GetReturnedResources())
	s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: RouteType, ResponseNonce: "1"})
	if err := c.update(nil, []string{"a"}, nil); err != nil {
		t.Fatal(err)
	}
	resp, _ = (<-s.ch).GetDeltaDiscoveryResponse()
	if len(resp.Resources) != 0 || len(resp.RemovedResources) != 1 || resp.RemovedResources[0] != "a" {
		t.Fatalf("removal: %v", resp)
	}
}

// An Envoy back after a restart, holding everything current, gets an
// empty answer: from then on the cache knows its stream (no full
// comparison per request) and go-control-plane holds the stream's small
// map, not the versions the Envoy announced.
func TestDeltaCacheAnswersAReturningEnvoy(t *testing.T) {
	c := newDeltaCache(RouteType, newFullStateCache())
	a, b := route("a", "x"), route("b", "y")
	if err := c.update(map[string]entry{"a": {msg: a, version: Version(a)}, "b": {msg: b, version: Version(b)}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	held := map[string]string{"a": Version(a), "b": Version(b)}
	s := &deltaStream{t: t, c: c, ch: make(chan cache.DeltaResponse, 1), holds: maps.Clone(held)}
	s.sub = stream.NewDeltaSubscription([]string{"a", "b"}, nil, maps.Clone(held), true)
	s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: RouteType, ResourceNamesSubscribe: []string{"a", "b"}, InitialResourceVersions: held})
	var r cache.DeltaResponse
	select {
	case r = <-s.ch:
	default:
		t.Fatal("no answer to a returning Envoy")
	}
	resp, err := r.GetDeltaDiscoveryResponse()
	if err != nil || len(resp.Resources) != 0 || len(resp.RemovedResources) != 0 {
		t.Fatalf("answer %v %v, want an empty one", resp, err)
	}
	if m := r.GetReturnedResources(); len(m) != 0 || c.streams[mapID(m)] == nil {
		t.Fatalf("returned map %v, known %v", m, c.streams[mapID(m)] != nil)
	}
	s.sub.SetReturnedResources(r.GetReturnedResources())
	runs := c.fullRuns
	s.watch(&discovery.DeltaDiscoveryRequest{TypeUrl: RouteType, ResponseNonce: "1"})
	a2 := route("a", "z")
	if err := c.update(map[string]entry{"a": {msg: a2, version: Version(a2)}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	s.drain()
	if c.fullRuns != runs || s.holds["a"] != Version(a2) || s.holds["b"] != Version(b) {
		t.Fatalf("full comparisons %d -> %d, holds %v", runs, c.fullRuns, s.holds)
	}
}
