package xds

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// autoEnvoy ACKs everything and follows references like Envoy: EDS for the
// clusters it gets, RDS "rc" once it has listeners.
func autoEnvoy(t *testing.T, addr, id string, delta bool) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ads := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr))
	if delta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			st.Send(&discovery.DeltaDiscoveryRequest{Node: node(id), TypeUrl: ClusterType})
			st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: ListenerType})
			rds := false
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
				switch r.GetTypeUrl() {
				case ClusterType:
					var names []string
					for _, res := range r.GetResources() {
						names = append(names, res.GetName())
					}
					st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: EndpointType, ResourceNamesSubscribe: names})
				case ListenerType:
					if !rds {
						rds = true
						st.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: RouteType, ResourceNamesSubscribe: []string{"rc"}})
					}
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
		subs := map[string][]string{RouteType: {"rc"}}
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
				next = RouteType
			}
			if next != "" {
				st.Send(&discovery.DiscoveryRequest{TypeUrl: next, VersionInfo: versions[next], ResponseNonce: nonces[next], ResourceNames: subs[next]})
			}
		}
	}()
}

// TestScale measures convergence with many clusters and Envoys. Run with
// SLUICE_XDS_SCALE=clusters,envoys (half SotW, half delta), e.g. 10000,50.
func TestScale(t *testing.T) {
	spec := os.Getenv("SLUICE_XDS_SCALE")
	if spec == "" {
		t.Skip("set SLUICE_XDS_SCALE=clusters,envoys")
	}
	var nc, ne int
	if _, err := fmt.Sscanf(spec, "%d,%d", &nc, &ne); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Options{})
	names := make([]string, nc)
	for i := range names {
		names[i] = "ns" + strconv.Itoa(i%100) + "/svc-" + strconv.Itoa(i)
	}
	snap := snapshot(names, names)
	start := time.Now()
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	t.Logf("first SetSnapshot (%d clusters): %v", nc, time.Since(start))
	waitSynced := func(what string) time.Duration {
		t.Helper()
		gen, start := s.Generation(), time.Now()
		deadline := start.Add(5 * time.Minute)
		for {
			synced, _ := s.Synced(gen)
			if len(synced) == ne {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d of %d synced", what, len(synced), ne)
			}
			time.Sleep(5 * time.Millisecond)
		}
		d := time.Since(start)
		t.Logf("%s: all %d Envoys synced in %v", what, ne, d)
		return d
	}
	start = time.Now()
	for i := range ne {
		autoEnvoy(t, s.addr, fmt.Sprintf("envoy-%d", i), i%2 == 1)
	}
	waitSynced("boot")

	// One more service: a cluster, its endpoints and a route to it.
	for i := range 3 {
		n := fmt.Sprintf("new/svc-%d", i)
		snap = Snapshot{Clusters: clone(snap.Clusters), Endpoints: clone(snap.Endpoints), Listeners: snap.Listeners, Routes: map[string]proto.Message{}}
		snap.Clusters[n], snap.Endpoints[n] = cluster(n), cla(n, "10.1.0.1")
		names = append(names, n)
		snap.Routes["rc"] = route("rc", names...)
		start = time.Now()
		if err := s.SetSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		t.Logf("SetSnapshot returned in %v", time.Since(start))
		waitSynced("add a service")
	}

	// One endpoint change.
	c := cla(names[0], "10.2.0.1")
	start = time.Now()
	if err := s.SetEndpoints(map[string]*endpointCLA{names[0]: c}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoint ACKs", func() bool { return len(s.Acked(EndpointType, names[0], Version(c))) == ne })
	t.Logf("endpoint change: all %d Envoys ACKed in %v", ne, time.Since(start))

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("heap in use: %d MiB", ms.HeapInuse>>20)
}

func clone(m map[string]proto.Message) map[string]proto.Message {
	out := make(map[string]proto.Message, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
