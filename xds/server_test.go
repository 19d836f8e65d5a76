package xds

import (
	"context"
	"slices"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
)

func TestNothingBeforeFirstSnapshot(t *testing.T) {
	s := startServer(t, Options{})
	health := grpc_health_v1.NewHealthClient(dial(t, s.addr))
	hc, err := health.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != grpc_health_v1.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health before the first snapshot: %v, %v", hc.GetStatus(), err)
	}

	sotw := newSotwEnvoy(t, s.addr, "sotw-1")
	sotw.request(ListenerType)
	sotw.request(ClusterType)
	// A delta Envoy reconnecting with live config: an empty answer would
	// make it drop cluster "a".
	delta := newDeltaEnvoy(t, s.addr, "delta-1")
	delta.send(&discoveryDeltaRequest{TypeUrl: ClusterType, InitialResourceVersions: map[string]string{"a": Version(cluster("a"))}})
	sotw.none()
	delta.none()
	if s.Ready() {
		t.Fatal("ready before the first snapshot")
	}

	// SetEndpoints alone does not start serving.
	if err := s.SetEndpoints(nil); err != nil {
		t.Fatal(err)
	}
	sotw.none()

	if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a"})); err != nil {
		t.Fatal(err)
	}
	// Parked watches are answered clusters first, though LDS was asked first.
	sotw.expect(ClusterType, "a", "b")
	sotw.expect(ListenerType, "http")
	// The delta Envoy already holds "a" at this version: only "b" is sent,
	// and nothing is removed.
	delta.expect(ClusterType, []string{"b"}, nil)

	hc, err = health.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Fatalf("health after the first snapshot: %v, %v", hc.GetStatus(), err)
	}
}

func TestMarkReadyServesEmptyState(t *testing.T) {
	s := startServer(t, Options{})
	e := newSotwEnvoy(t, s.addr, "envoy-1")
	e.request(ClusterType)
	e.none()
	s.MarkReady()
	e.expect(ClusterType)
}

func TestClustersAndEndpointsBeforeRoutes(t *testing.T) {
	t.Run("sotw", func(t *testing.T) {
		s := startServer(t, Options{})
		if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
			t.Fatal(err)
		}
		e := newSotwEnvoy(t, s.addr, "envoy-1")
		e.boot([]string{"a"})

		next := snapshot([]string{"a", "b"}, []string{"a", "b"})
		rc := []Ref{{TypeURL: RouteType, Name: "rc", Version: Version(next.Routes["rc"])}}
		if err := s.SetSnapshot(next); err != nil {
			t.Fatal(err)
		}
		gen := s.Generation()
		if gen != 2 {
			t.Fatalf("generation %d, want 2", gen)
		}
		cds := e.expect(ClusterType, "a", "b")
		e.none() // no routes while the new cluster is not ACKed
		e.ack(cds)
		e.request(EndpointType, "a", "b")
		eds := e.expect(EndpointType, "b")
		e.none() // nor while it has no endpoints
		e.ack(eds, "a", "b")
		rds := e.expect(RouteType, "rc")
		if behind := s.Behind(rc); !slices.Equal(behind, []string{"envoy-1"}) {
			t.Fatalf("Behind before the route ACK: %v", behind)
		}
		if synced, _ := s.Synced(gen); !slices.Equal(synced, []string{"envoy-1"}) {
			t.Fatalf("listeners unchanged, yet not Synced: %v", synced)
		}
		e.ack(rds, "rc")
		eventually(t, "envoy-1 to hold the new route", func() bool { return len(s.Behind(rc)) == 0 })
		e.none()
	})
	t.Run("delta", func(t *testing.T) {
		s := startServer(t, Options{})
		if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
			t.Fatal(err)
		}
		e := newDeltaEnvoy(t, s.addr, "envoy-1")
		e.boot([]string{"a"})

		if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a", "b"})); err != nil {
			t.Fatal(err)
		}
		cds := e.expect(ClusterType, []string{"b"}, nil)
		e.none()
		e.ack(cds)
		e.subscribe(EndpointType, "b")
		eds := e.expect(EndpointType, []string{"b"}, nil)
		e.none()
		e.ack(eds)
		e.ack(e.expect(RouteType, []string{"rc"}, nil))
		e.none()
	})
}

func TestSecretsBeforeListeners(t *testing.T) {
	s := startServer(t, Options{})
	snap := snapshot([]string{"a"}, []string{"a"})
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	e := newDeltaEnvoy(t, s.addr, "envoy-1")
	e.boot([]string{"a"})
	// A new HTTPS listener and its secret: by the time the listener is
	// sent, the secret is served, so Envoy's SDS request gets it at once.
	snap.Listeners["https"] = listener("https", "rc", "https")
	snap.Secrets = msgs(secret("ns/cert"))
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	e.expect(ListenerType, []string{"https"}, nil)
	if got := s.Served(SecretType, "ns/cert"); got != Version(secret("ns/cert")) {
		t.Fatalf("secret not served when the listener went out: %q", got)
	}
	e.subscribe(SecretType, "ns/cert")
	e.expect(SecretType, []string{"ns/cert"}, nil)
}

func TestEndpointOnlyChangeSendsOnlyEDS(t *testing.T) {
	t.Run("sotw", func(t *testing.T) {
		s := startServer(t, Options{})
		if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a"})); err != nil {
			t.Fatal(err)
		}
		e := newSotwEnvoy(t, s.addr, "envoy-1")
		e.boot([]string{"a", "b"})

		if err := s.SetEndpoints(map[string]*endpointCLA{"a": cla("a", "10.0.0.2")}); err != nil {
			t.Fatal(err)
		}
		e.ack(e.expect(EndpointType, "a"), "a", "b")
		e.none()

		// The same through a full snapshot: still EDS only, only "b".
		snap := snapshot([]string{"a", "b"}, []string{"a"})
		snap.Endpoints["a"] = cla("a", "10.0.0.2")
		snap.Endpoints["b"] = cla("b", "10.0.0.3")
		if err := s.SetSnapshot(snap); err != nil {
			t.Fatal(err)
		}
		e.ack(e.expect(EndpointType, "b"), "a", "b")
		e.none()
	})
	t.Run("delta", func(t *testing.T) {
		s := startServer(t, Options{})
		if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a"})); err != nil {
			t.Fatal(err)
		}
		e := newDeltaEnvoy(t, s.addr, "envoy-1")
		e.boot([]string{"a", "b"})
		pushes := s.metric(t, "sluice_xds_pushes_total", "endpoint")
		if err := s.SetEndpoints(map[string]*endpointCLA{"b": cla("b", "10.0.0.9")}); err != nil {
			t.Fatal(err)
		}
		r := e.expect(EndpointType, []string{"b"}, nil)
		if r.GetResources()[0].GetVersion() != Version(cla("b", "10.0.0.9")) {
			t.Fatalf("version %s, want the content hash", r.GetResources()[0].GetVersion())
		}
		e.ack(r)
		e.none()
		if got := s.metric(t, "sluice_xds_pushes_total", "endpoint"); got != pushes+1 {
			t.Fatalf("endpoint pushes went from %v to %v, want one more", pushes, got)
		}
	})
}

func TestUnchangedSnapshotSendsNothing(t *testing.T) {
	s := startServer(t, Options{})
	snap := snapshot([]string{"a", "b"}, []string{"a", "b"})
	snap.Secrets = msgs(secret("ns/cert"))
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	sotw := newSotwEnvoy(t, s.addr, "sotw")
	sotw.boot([]string{"a", "b"})
	delta := newDeltaEnvoy(t, s.addr, "delta")
	delta.boot([]string{"a", "b"})
	before := s.metric(t, "sluice_xds_pushes_total", "cluster")

	// Equal content in new messages, twice.
	for range 2 {
		if err := s.SetSnapshot(cloneSnapshot(snap)); err != nil {
			t.Fatal(err)
		}
	}
	sotw.none()
	delta.none()
	if got := s.metric(t, "sluice_xds_pushes_total", "cluster"); got != before {
		t.Fatalf("cluster pushes went from %v to %v", before, got)
	}
	if got := s.metric(t, "sluice_xds_resources", "cluster"); got != 2 {
		t.Fatalf("sluice_xds_resources{type=cluster} = %v, want 2", got)
	}
	if got := s.metric(t, "sluice_xds_resource_bytes", "cluster"); got != float64(proto.Size(cluster("a"))+proto.Size(cluster("b"))) {
		t.Fatalf("sluice_xds_resource_bytes{type=cluster} = %v", got)
	}
}

func TestVersionsAreContentDerived(t *testing.T) {
	want := snapshot([]string{"a", "b"}, []string{"a", "b"})
	s1 := startServer(t, Options{})
	s2 := startServer(t, Options{})
	// Different histories, same final state.
	if err := s1.SetSnapshot(snapshot([]string{"x"}, []string{"x"})); err != nil {
		t.Fatal(err)
	}
	if err := s1.SetSnapshot(cloneSnapshot(want)); err != nil {
		t.Fatal(err)
	}
	if err := s2.SetSnapshot(want); err != nil {
		t.Fatal(err)
	}
	eventually(t, "s1 to drop x", func() bool { return s1.Served(ClusterType, "x") == "" })

	sotwVersions := func(s *testServer, id string) []string {
		e := newSotwEnvoy(t, s.addr, id)
		var vs []string
		e.request(ClusterType)
		vs = append(vs, e.expect(ClusterType, "a", "b").GetVersionInfo())
		e.request(EndpointType, "a", "b")
		vs = append(vs, e.expect(EndpointType, "a", "b").GetVersionInfo())
		e.request(ListenerType)
		vs = append(vs, e.expect(ListenerType, "http").GetVersionInfo())
		e.request(RouteType, "rc")
		vs = append(vs, e.expect(RouteType, "rc").GetVersionInfo())
		return vs
	}
	v1, v2 := sotwVersions(s1, "e1"), sotwVersions(s2, "e2")
	if !slices.Equal(v1, v2) {
		t.Fatalf("SotW versions differ: %v vs %v", v1, v2)
	}

	for _, s := range []*testServer{s1, s2} {
		e := newDeltaEnvoy(t, s.addr, "d")
		e.subscribe(ClusterType)
		for _, r := range e.expect(ClusterType, []string{"a", "b"}, nil).GetResources() {
			if r.GetVersion() != Version(want.Clusters[r.GetName()]) {
				t.Fatalf("delta version of %s is %s, want %s", r.GetName(), r.GetVersion(), Version(want.Clusters[r.GetName()]))
			}
		}
		if got := s.Served(RouteType, "rc"); got != Version(want.Routes["rc"]) {
			t.Fatalf("Served(rc) = %s, want %s", got, Version(want.Routes["rc"]))
		}
	}
}

func TestRemovalWaitsForRoutesAck(t *testing.T) {
	t.Run("sotw", func(t *testing.T) {
		s := startServer(t, Options{})
		if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a", "b"})); err != nil {
			t.Fatal(err)
		}
		e := newSotwEnvoy(t, s.addr, "envoy-1")
		e.boot([]string{"a", "b"})

		if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
			t.Fatal(err)
		}
		rds := e.expect(RouteType, "rc")
		e.none() // "b" stays with this Envoy while its old routes may still use it
		e.ack(rds, "rc")
		e.ack(e.expect(ClusterType, "a"))
		eventually(t, "b's endpoints to go", func() bool { return s.Served(EndpointType, "b") == "" })
	})
	t.Run("delta", func(t *testing.T) {
		s := startServer(t, Options{})
		if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a", "b"})); err != nil {
			t.Fatal(err)
		}
		e := newDeltaEnvoy(t, s.addr, "envoy-1")
		e.boot([]string{"a", "b"})

		if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
			t.Fatal(err)
		}
		rds := e.expect(RouteType, []string{"rc"}, nil)
		e.none()
		e.ack(rds)
		// Removals come clusters and endpoints, in the order of the update.
		got := map[string][]string{}
		for range 2 {
			r := e.recv()
			got[r.GetTypeUrl()] = r.GetRemovedResources()
			e.ack(r)
		}
		if !slices.Equal(got[ClusterType], []string{"b"}) || !slices.Equal(got[EndpointType], []string{"b"}) {
			t.Fatalf("removals: %v", got)
		}
	})
}

// Make-before-break holds per Envoy: one that does not ACK the new
// cluster gets no route to it, and the other gets its routes at once,
// long before the ACK timeout; the stuck one gets them once it ACKs.
func TestStuckEnvoyDelaysNobody(t *testing.T) {
	s := startServer(t, Options{AckTimeout: time.Minute})
	if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
		t.Fatal(err)
	}
	stuck := newDeltaEnvoy(t, s.addr, "envoy-stuck")
	stuck.boot([]string{"a"})
	fine := newDeltaEnvoy(t, s.addr, "envoy-fine")
	fine.boot([]string{"a"})

	next := snapshot([]string{"a", "b"}, []string{"a", "b"})
	rc := []Ref{{TypeURL: RouteType, Name: "rc", Version: Version(next.Routes["rc"])}}
	if err := s.SetSnapshot(next); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cds := stuck.expect(ClusterType, []string{"b"}, nil) // and never ACKed, for now

	fine.ack(fine.expect(ClusterType, []string{"b"}, nil))
	fine.subscribe(EndpointType, "b")
	fine.ack(fine.expect(EndpointType, []string{"b"}, nil))
	fine.ack(fine.expect(RouteType, []string{"rc"}, nil))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the other Envoy got its routes after %v", d)
	}
	eventually(t, "only the stuck Envoy behind", func() bool { return slices.Equal(s.Behind(rc), []string{"envoy-stuck"}) })
	stuck.none() // no route to a cluster it does not hold

	stuck.ack(cds)
	stuck.subscribe(EndpointType, "b")
	stuck.ack(stuck.expect(EndpointType, []string{"b"}, nil))
	stuck.ack(stuck.expect(RouteType, []string{"rc"}, nil))
	eventually(t, "every Envoy holding the routes", func() bool { return len(s.Behind(rc)) == 0 })
}

// Removals too: the Envoy that ACKs its new routes loses the unused
// cluster at once; the one that does not keeps it until it does.
func TestStuckEnvoyKeepsWhatItsRoutesUse(t *testing.T) {
	s := startServer(t, Options{AckTimeout: time.Minute})
	if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a", "b"})); err != nil {
		t.Fatal(err)
	}
	stuck := newDeltaEnvoy(t, s.addr, "envoy-stuck")
	stuck.boot([]string{"a", "b"})
	fine := newDeltaEnvoy(t, s.addr, "envoy-fine")
	fine.boot([]string{"a", "b"})

	if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
		t.Fatal(err)
	}
	rds := stuck.expect(RouteType, []string{"rc"}, nil) // not ACKed, for now
	fine.ack(fine.expect(RouteType, []string{"rc"}, nil))
	got := map[string][]string{}
	for range 2 {
		r := fine.recv()
		got[r.GetTypeUrl()] = r.GetRemovedResources()
		fine.ack(r)
	}
	if !slices.Equal(got[ClusterType], []string{"b"}) || !slices.Equal(got[EndpointType], []string{"b"}) {
		t.Fatalf("removals for the Envoy that ACKed: %v", got)
	}
	stuck.none() // b stays while its old routes may use it
	stuck.ack(rds)
	got = map[string][]string{}
	for range 2 {
		r := stuck.recv()
		got[r.GetTypeUrl()] = r.GetRemovedResources()
		stuck.ack(r)
	}
	if !slices.Equal(got[ClusterType], []string{"b"}) || !slices.Equal(got[EndpointType], []string{"b"}) {
		t.Fatalf("removals once the stuck Envoy ACKed: %v", got)
	}
}

func TestAckTimeoutBoundsTheWait(t *testing.T) {
	s := startServer(t, Options{AckTimeout: 500 * time.Millisecond})
	if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
		t.Fatal(err)
	}
	e := newSotwEnvoy(t, s.addr, "envoy-1")
	e.boot([]string{"a"})
	if err := s.SetSnapshot(snapshot([]string{"a", "b"}, []string{"a", "b"})); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.expect(ClusterType, "a", "b") // never ACKed
	e.expect(RouteType, "rc")
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("routes after %v, before the timeout", d)
	}
}

func TestNackIsRecordedAndServedByCSDS(t *testing.T) {
	s := startServer(t, Options{})
	snap := snapshot([]string{"a"}, []string{"a"})
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	e := newSotwEnvoy(t, s.addr, "gw-pod-1")
	e.boot([]string{"a"})
	eventually(t, "the boot ACKs", func() bool {
		return slices.Equal(s.Acked(ClusterType, "a", Version(cluster("a"))), []string{"gw-pod-1"}) &&
			len(s.Acked(RouteType, "rc", Version(route("rc", "a")))) == 1
	})
	changes, cancel := s.Subscribe()
	defer cancel()
	for len(changes) > 0 {
		<-changes
	}

	lds0 := s.Nodes()[0].Types[ListenerType]
	snap.Listeners = msgs(listener("http", "rc", "broken"))
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	lds := e.expect(ListenerType, "http")
	const msg = "Error adding/updating listener(s) http: invalid stat prefix"
	e.nack(lds, "old", msg)
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for the NACK")
	}
	eventually(t, "the NACK", func() bool { return s.metric(t, "sluice_xds_nacks_total", "listener") == 1 })

	if _, behind := s.Synced(s.Generation()); !slices.Equal(behind, []string{"gw-pod-1"}) {
		t.Fatalf("a node that NACKed the listener is not behind: %v", behind)
	}
	n := s.Nodes()
	if len(n) != 1 || n[0].ID != "gw-pod-1" || n[0].Cluster != "gateway-external" {
		t.Fatalf("nodes: %+v", n)
	}
	ts := n[0].Types[ListenerType]
	bad := Version(listener("http", "rc", "broken"))
	if ts.LastNack == nil || ts.LastNack.Error != msg || !slices.Equal(ts.LastNack.Resources, []string{"http"}) {
		t.Fatalf("last NACK: %+v", ts.LastNack)
	}
	if e := ts.Errors["http"]; e.Error != msg || e.Version != bad {
		t.Fatalf("error of http: %+v", e)
	}
	if ts.Acked["http"] != lds0.Acked["http"] {
		t.Fatalf("the NACK changed the ACKed version")
	}

	csds := statusv3.NewClientStatusDiscoveryServiceClient(dial(t, s.addr))
	resp, err := csds.FetchClientStatus(context.Background(), &statusv3.ClientStatusRequest{
		NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "gw-"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetConfig()) != 1 || resp.GetConfig()[0].GetNode().GetId() != "gw-pod-1" {
		t.Fatalf("CSDS configs: %v", resp.GetConfig())
	}
	found := map[string]*statusv3.ClientConfig_GenericXdsConfig{}
	for _, g := range resp.GetConfig()[0].GetGenericXdsConfigs() {
		found[typeLabel(g.GetTypeUrl())+"/"+g.GetName()] = g
	}
	l := found["listener/http"]
	if l.GetClientStatus() != adminv3.ClientResourceStatus_NACKED || l.GetConfigStatus() != statusv3.ConfigStatus_ERROR ||
		l.GetErrorState().GetDetails() != msg || l.GetErrorState().GetVersionInfo() != bad {
		t.Fatalf("CSDS listener: %v", l)
	}
	c := found["cluster/a"]
	if c.GetClientStatus() != adminv3.ClientResourceStatus_ACKED || c.GetConfigStatus() != statusv3.ConfigStatus_SYNCED ||
		c.GetVersionInfo() != Version(cluster("a")) || c.GetXdsConfig() == nil {
		t.Fatalf("CSDS cluster: %v", c)
	}

	// Streaming CSDS, and a matcher that matches nothing.
	st, err := csds.StreamClientStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&statusv3.ClientStatusRequest{NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "other"}}}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || len(r.GetConfig()) != 0 {
		t.Fatalf("stream CSDS for another node: %v, %v", r, err)
	}

	// A fixed listener clears the error.
	snap.Listeners = msgs(listener("http", "rc", "fixed"))
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	e.ack(e.expect(ListenerType, "http"))
	eventually(t, "the error to clear", func() bool {
		ts := s.Nodes()[0].Types[ListenerType]
		return len(ts.Errors) == 0 && ts.Acked["http"] == Version(listener("http", "rc", "fixed"))
	})
}

func TestDisconnectedNodesAreDropped(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.SetSnapshot(snapshot([]string{"a"}, []string{"a"})); err != nil {
		t.Fatal(err)
	}
	e1 := newSotwEnvoy(t, s.addr, "envoy-1")
	e1.boot([]string{"a"})
	e2 := newDeltaEnvoy(t, s.addr, "envoy-2")
	e2.boot([]string{"a"})
	eventually(t, "two nodes", func() bool { return len(s.Nodes()) == 2 })
	if got := s.metric(t, "sluice_xds_connected_envoys", ""); got != 2 {
		t.Fatalf("connected = %v", got)
	}
	eventually(t, "both to ACK rc", func() bool {
		return slices.Equal(s.Acked(RouteType, "rc", Version(route("rc", "a"))), []string{"envoy-1", "envoy-2"})
	})
	e1.cancel()
	eventually(t, "envoy-1 to go", func() bool {
		n := s.Nodes()
		return len(n) == 1 && n[0].ID == "envoy-2" && n[0].Delta
	})
	if got := s.metric(t, "sluice_xds_connected_envoys", ""); got != 1 {
		t.Fatalf("connected = %v", got)
	}
	if got := s.metric(t, "sluice_xds_acks_total", "route"); got != 2 {
		t.Fatalf("route ACKs = %v", got)
	}
}

func TestReflectionListsServices(t *testing.T) {
	s := startServer(t, Options{})
	st, err := reflectionpb.NewServerReflectionClient(dial(t, s.addr)).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, svc := range r.GetListServicesResponse().GetService() {
		got = append(got, svc.GetName())
	}
	for _, want := range []string{
		"envoy.service.discovery.v3.AggregatedDiscoveryService",
		"envoy.service.cluster.v3.ClusterDiscoveryService",
		"envoy.service.endpoint.v3.EndpointDiscoveryService",
		"envoy.service.listener.v3.ListenerDiscoveryService",
		"envoy.service.route.v3.RouteDiscoveryService",
		"envoy.service.secret.v3.SecretDiscoveryService",
		"envoy.service.status.v3.ClientStatusDiscoveryService",
		"grpc.health.v1.Health",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lacks %s (has %v)", want, got)
		}
	}
}

func TestMalformedSnapshotIsRejected(t *testing.T) {
	s := startServer(t, Options{})
	bad := snapshot([]string{"a"}, []string{"a"})
	bad.Clusters["wrong-key"] = cluster("a")
	if err := s.SetSnapshot(bad); err == nil {
		t.Fatal("a key that is not the resource name was accepted")
	}
	bad = snapshot([]string{"a"}, []string{"a"})
	bad.Routes["a"] = cluster("a")
	if err := s.SetSnapshot(bad); err == nil {
		t.Fatal("a cluster among routes was accepted")
	}
	if s.Ready() {
		t.Fatal("a rejected snapshot started serving")
	}
}

// VersionOf answers from the desired state for the message handed over,
// and encodes any other.
func TestVersionOf(t *testing.T) {
	s := startServer(t, Options{})
	snap := snapshot([]string{"a"}, []string{"a"})
	if err := s.SetSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	rc := snap.Routes["rc"]
	if got := s.VersionOf(RouteType, "rc", rc); got != Version(rc) {
		t.Fatalf("held message: %q, want %q", got, Version(rc))
	}
	other := route("rc", "a", "b")
	if got := s.VersionOf(RouteType, "rc", other); got != Version(other) || got == Version(rc) {
		t.Fatalf("other message: %q", got)
	}
}
