package xds

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// A replica counts the Envoys of its peers: an Envoy connected to B keeps
// A's generation behind until it holds the same content, then synced.
func TestPeersCountInSynced(t *testing.T) {
	a, b := startServer(t, Options{}), startServer(t, Options{})
	peers := NewPeers(zaptest.NewLogger(t), []string{b.addr, a.addr}, 50*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go peers.Run(ctx)
	a.SetPeers(peers)

	snap := snapshot([]string{"c1"}, []string{"c1"})
	for _, s := range []*testServer{a, b} {
		if err := s.SetSnapshot(cloneSnapshot(snap)); err != nil {
			t.Fatal(err)
		}
	}
	e := newSotwEnvoy(t, b.addr, "envoy-on-b")
	e.request(ClusterType)
	e.ack(e.expect(ClusterType, "c1"))
	e.request(EndpointType, "c1")
	e.ack(e.expect(EndpointType, "c1"), "c1")
	e.request(ListenerType)
	e.ack(e.expect(ListenerType, "http"))

	waitSynced := func(want string, behind bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			synced, late := a.Synced(a.Generation())
			if behind && slices.Equal(late, []string{want}) || !behind && slices.Equal(synced, []string{want}) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("A: synced %v behind %v; want %s %s", synced, late, want, map[bool]string{true: "behind", false: "synced"}[behind])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitSynced("envoy-on-b", true) // routes not yet ACKed on B
	e.request(RouteType, "rc")
	e.ack(e.expect(RouteType, "rc"), "rc")
	waitSynced("envoy-on-b", false)
}
