package xds

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// fleetEntry is one CSDS entry as an operator reads it.
type fleetEntry struct{ node, replica, err string }

func askCSDS(t *testing.T, addr string, req *statusv3.ClientStatusRequest) ([]fleetEntry, metadata.MD) {
	t.Helper()
	var hdr metadata.MD
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(dial(t, addr)).
		FetchClientStatus(context.Background(), req, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	var out []fleetEntry
	for _, cc := range resp.GetConfig() {
		f := cc.GetNode().GetMetadata().GetFields()
		out = append(out, fleetEntry{cc.GetNode().GetId(), f[ReplicaKey].GetStringValue(), f[ReplicaErrorKey].GetStringValue()})
		if cc.GetNode().GetId() != "" && len(cc.GetGenericXdsConfigs()) == 0 {
			t.Errorf("%s: entry of %s has no resources", addr, cc.GetNode().GetId())
		}
	}
	return out, hdr
}

// waitAcked waits until s has the ACKs of clusters from exactly these nodes.
func waitAcked(t *testing.T, s *testServer, ids ...string) {
	t.Helper()
	eventually(t, "clusters ACKed by "+strings.Join(ids, ", "), func() bool {
		var acked []string
		for _, n := range s.Nodes() {
			if len(n.Types[ClusterType].Acked) > 0 {
				acked = append(acked, n.ID)
			}
		}
		return slices.Equal(acked, ids)
	})
}

// Any replica that knows its peers answers CSDS for every Envoy of the
// fleet, each once and tagged with its replica, whichever replica it is
// connected to; an unreachable peer is listed as such.
func TestFleetCSDS(t *testing.T) {
	a := startServer(t, Options{Replica: "replica-a"})
	b := startServer(t, Options{Replica: "replica-b"})
	// A port where nothing listens: a replica that is down.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, s := range []*testServer{a, b} {
		// Every replica gets the same list, itself included, as the
		// chart's headless Service gives it.
		p := NewPeers(zaptest.NewLogger(t), []string{a.addr, b.addr, down}, 50*time.Millisecond, nil)
		s.SetPeers(p)
		go p.Run(ctx)
		if err := s.SetSnapshot(snapshot([]string{"c1"}, []string{"c1"})); err != nil {
			t.Fatal(err)
		}
	}
	// Both Envoys on B first: A knows none of them by itself.
	for _, id := range []string{"envoy-1", "envoy-0"} {
		e := newSotwEnvoy(t, b.addr, id)
		e.request(ClusterType)
		e.ack(e.expect(ClusterType, "c1"))
	}
	waitAcked(t, b, "envoy-0", "envoy-1")
	want := []fleetEntry{{"envoy-0", "replica-b", ""}, {"envoy-1", "replica-b", ""}, {"", down, "x"}}
	check := func(addr string, want []fleetEntry) {
		t.Helper()
		got, hdr := askCSDS(t, addr, &statusv3.ClientStatusRequest{ExcludeResourceContents: true})
		if len(got) != len(want) {
			t.Fatalf("CSDS of %s: %+v, want %+v", addr, got, want)
		}
		for i := range want {
			if got[i].node != want[i].node || got[i].replica != want[i].replica || (got[i].err != "") != (want[i].err != "") {
				t.Fatalf("CSDS of %s: %+v, want %+v", addr, got, want)
			}
		}
		if s := strings.Join(hdr.Get(scopeHeader), ""); !strings.HasPrefix(s, "fleet: the Envoys of 2 replicas (1 unreachable)") {
			t.Errorf("CSDS of %s: scope %q", addr, s)
		}
	}
	check(a.addr, want)
	check(b.addr, want)

	// One Envoy on A: still each once, with its own replica.
	e := newSotwEnvoy(t, a.addr, "envoy-2")
	e.request(ClusterType)
	e.ack(e.expect(ClusterType, "c1"))
	waitAcked(t, a, "envoy-2")
	want = slices.Insert(want, 2, fleetEntry{"envoy-2", "replica-a", ""})
	check(a.addr, want)
	check(b.addr, want)

	// Node matchers reach the peers too.
	got, _ := askCSDS(t, a.addr, &statusv3.ClientStatusRequest{NodeMatchers: []*matcherv3.NodeMatcher{{
		NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "envoy-1"}}}}})
	if len(got) != 2 || got[0].node != "envoy-1" || got[0].replica != "replica-b" || got[1].err == "" {
		t.Fatalf("CSDS of A for envoy-1: %+v", got)
	}

	// A request marked as a peer's is answered for the replica alone.
	got, hdr := askCSDS(t, a.addr, &statusv3.ClientStatusRequest{Node: node("x")})
	if len(got) != 4 {
		t.Fatalf("a plain request with a node is a fleet request: %+v", got)
	}
	req := &statusv3.ClientStatusRequest{}
	req.Node = node("replica-b")
	req.Node.Cluster = PeerCluster
	got, hdr = askCSDS(t, a.addr, req)
	if len(got) != 1 || got[0].node != "envoy-2" || hdr.Get(replicaHeader)[0] != "replica-a" {
		t.Fatalf("peer request to A: %+v %v", got, hdr)
	}
}

// Without peers a replica answers for its own Envoys and says so.
func TestReplicaCSDS(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.SetSnapshot(snapshot([]string{"c1"}, []string{"c1"})); err != nil {
		t.Fatal(err)
	}
	e := newSotwEnvoy(t, s.addr, "envoy-0")
	e.request(ClusterType)
	e.ack(e.expect(ClusterType, "c1"))
	waitAcked(t, s, "envoy-0")
	got, hdr := askCSDS(t, s.addr, &statusv3.ClientStatusRequest{})
	if len(got) != 1 || got[0] != (fleetEntry{"envoy-0", "sluice", ""}) {
		t.Fatalf("CSDS: %+v", got)
	}
	if s := strings.Join(hdr.Get(scopeHeader), ""); !strings.Contains(s, "this replica only") {
		t.Errorf("scope %q", s)
	}
}
