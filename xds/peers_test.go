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
	peers := NewPeers(zaptest.NewLogger(t), []string{b.addr, a.addr}, 50*time.Millisecond, nil)
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

	rc := []Ref{{TypeURL: RouteType, Name: "rc", Version: Version(snap.Routes["rc"])}}
	wait := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("A: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait("envoy-on-b synced on listeners", func() bool { s, _ := a.Synced(a.Generation()); return slices.Equal(s, []string{"envoy-on-b"}) })
	wait("envoy-on-b behind on the route", func() bool { return slices.Equal(a.Behind(rc), []string{"envoy-on-b"}) })
	e.request(RouteType, "rc")
	e.ack(e.expect(RouteType, "rc"), "rc")
	wait("envoy-on-b holding the route", func() bool { return len(a.Behind(rc)) == 0 })
}
