package xds

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// autoEnvoy follows references as Envoy does with Sluice's listeners:
// clusters, then EDS for the clusters it gets; listeners, then the scopes
// (all of them), then RDS for the route configurations the scopes name.
// It decodes every scope and ACKs every response with its nonce.
func autoEnvoy(t *testing.T, addr, id string, delta bool) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ads := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr))
	routesOf := func(rs []*anypb.Any) []string {
		var names []string
		for _, a := range rs {
			var sc routev3.ScopedRouteConfiguration
			if err := a.UnmarshalTo(&sc); err == nil {
				names = append(names, sc.GetRouteConfigurationName())
			}
		}
		return names
	}
	if delta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			st.Send(&discovery.DeltaDiscoveryRequest{Node: node(id), TypeUrl: ClusterType})
			st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: ListenerType})
			scopes := false
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
				var names []string
				for _, res := range r.GetResources() {
					names = append(names, res.GetName())
				}
				switch r.GetTypeUrl() {
				case ClusterType:
					st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: EndpointType, ResourceNamesSubscribe: names})
				case ListenerType:
					if !scopes {
						scopes = true
						st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: ScopeType})
					}
				case ScopeType:
					var anys []*anypb.Any
					for _, res := range r.GetResources() {
						anys = append(anys, res.GetResource())
					}
					st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: RouteType, ResourceNamesSubscribe: routesOf(anys)})
				}
			}
		}()
		return
	}
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		st.Send(&discovery.DiscoveryRequest{Node: node(id), TypeUrl: ClusterType})
		st.Send(&discovery.DiscoveryRequest{TypeUrl: ListenerType})
		subs := map[string][]string{}
		nonces := map[string]string{}
		versions := map[string]string{}
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			nonces[r.GetTypeUrl()], versions[r.GetTypeUrl()] = r.GetNonce(), r.GetVersionInfo()
			st.Send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: subs[r.GetTypeUrl()]})
			next := ""
			switch r.GetTypeUrl() {
			case ClusterType:
				subs[EndpointType] = anyNames(r.GetResources())
				next = EndpointType
			case ListenerType:
				if _, ok := nonces[ScopeType]; !ok {
					next = ScopeType
				}
			case ScopeType: // the whole set: the routes to hold are its routes
				subs[RouteType] = routesOf(r.GetResources())
				next = RouteType
			}
			if next != "" {
				st.Send(&discovery.DiscoveryRequest{TypeUrl: next, VersionInfo: versions[next], ResponseNonce: nonces[next], ResourceNames: subs[next]})
			}
		}
	}()
}

// service is what one KIngress of one host adds, named as the translator
// names them: a cluster and its endpoints, the ingress's route
// configuration and a scope for its host.
func service(s Snapshot, i int, ns string) (Snapshot, []Ref) {
	c := fmt.Sprintf("%s/svc-%d:80", ns, i)
	rc := fmt.Sprintf("ingress/%s/svc-%d", ns, i)
	host := fmt.Sprintf("svc-%d.%s.example.com", i, ns)
	r, sc := route(rc, c), scopeOf(host, rc)
	s.Clusters[c], s.Endpoints[c], s.Routes[rc], s.Scopes[host] = cluster(c), cla(c, "10.0.0.1"), r, sc
	return s, []Ref{{TypeURL: RouteType, Name: rc, Version: Version(r)}, {TypeURL: ScopeType, Name: host, Version: Version(sc)}}
}

func emptySnapshot() Snapshot {
	return Snapshot{Clusters: map[string]proto.Message{}, Endpoints: map[string]proto.Message{},
		Listeners: map[string]proto.Message{}, Routes: map[string]proto.Message{}, Scopes: map[string]proto.Message{}}
}

// TestScale measures convergence with many services and Envoys, in the
// shape the controller publishes (a scoped listener, a route configuration
// and a scope per ingress). Run with SLUICE_XDS_SCALE=services,envoys
// (half SotW, half delta), e.g. 10000,50; `make bench` runs 1000,10.
func TestScale(t *testing.T) {
	spec := os.Getenv("SLUICE_XDS_SCALE")
	if spec == "" {
		t.Skip("a benchmark, not a test: set SLUICE_XDS_SCALE=services,envoys (make bench)")
	}
	var ns, ne int
	if _, err := fmt.Sscanf(spec, "%d,%d", &ns, &ne); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Options{})
	snap := emptySnapshot()
	snap.Listeners = msgs(scopedListener("http", 8080))
	for i := range ns {
		snap, _ = service(snap, i, fmt.Sprintf("ns%d", i%100))
	}
	start := time.Now()
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	t.Logf("first SetSnapshot (%d services: clusters, route configurations, scopes): %v", ns, time.Since(start))
	start = time.Now()
	for i := range ne {
		autoEnvoy(t, s.addr, fmt.Sprintf("envoy-%d", i), i%2 == 1)
	}
	gen, deadline := s.Generation(), time.Now().Add(5*time.Minute)
	for {
		if synced, _ := s.Synced(gen); len(synced) == ne {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("boot: not all of %d Envoys synced after 5 minutes", ne)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("boot: all %d Envoys synced in %v", ne, time.Since(start))

	// One more service at a time, as the controller hands it over: what
	// changed only, then Ready once no Envoy is behind on its route
	// configuration and scope.
	for i := range 3 {
		set, refs := service(emptySnapshot(), ns+i, "new")
		start = time.Now()
		if err := s.Update(set, nil); err != nil {
			t.Fatal(err)
		}
		updated := time.Since(start)
		deadline := time.Now().Add(time.Minute)
		for len(s.Behind(refs)) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("add a service: Envoys behind after a minute: %v", s.Behind(refs))
			}
			time.Sleep(time.Millisecond)
		}
		t.Logf("add a service: Update returned in %v, all %d Envoys hold it in %v", updated, ne, time.Since(start))
	}

	// One endpoint change.
	name := "ns0/svc-0:80"
	c := cla(name, "10.2.0.1")
	start = time.Now()
	if err := s.SetEndpoints(map[string]*endpointCLA{name: c}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoint ACKs", func() bool { return len(s.Acked(EndpointType, name, Version(c))) == ne })
	t.Logf("endpoint change: all %d Envoys ACKed in %v", ne, time.Since(start))

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use: %d MiB", ms.HeapInuse>>20)
}
