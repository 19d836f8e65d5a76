package xds

import (
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

func encode(t testing.TB, m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Field 1 is the name of every type served.
func TestResourceName(t *testing.T) {
	for _, m := range []proto.Message{
		&clusterv3.Cluster{Name: "ns/svc:80", AltStatName: "x"},
		&endpointv3.ClusterLoadAssignment{ClusterName: "ns/svc:80", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}},
		&listenerv3.Listener{Name: "external-http"},
		&routev3.RouteConfiguration{Name: "ingress/ns/a", VirtualHosts: []*routev3.VirtualHost{{Name: "v"}}},
		&routev3.ScopedRouteConfiguration{Name: "internal/a.ns", RouteConfigurationName: "ingress/ns/a"},
		&tlsv3.Secret{Name: "ns/cert"},
	} {
		want := cache.GetResourceName(m)
		if got := resourceName(encode(t, m)); got != want {
			t.Errorf("%T: resourceName %q, want %q", m, got, want)
		}
	}
	if got := resourceName([]byte{0xff}); got != "" {
		t.Errorf("garbage: %q", got)
	}
}

// The memo answers as hashing would, by content, for the bytes it saw and
// for equal bytes elsewhere; and it stays bounded.
func TestHashMemo(t *testing.T) {
	var h hashMemo
	a := encode(t, &clusterv3.Cluster{Name: "a"})
	b := encode(t, &clusterv3.Cluster{Name: "b"})
	for i, c := range [][]byte{a, b, a, append([]byte(nil), a...), b[:len(b):len(b)]} {
		name, version := h.get(c)
		if wantName, wantVersion := resourceName(c), cache.HashResource(c); name != wantName || version != wantVersion {
			t.Fatalf("get %d: %q %q, want %q %q", i, name, version, wantName, wantVersion)
		}
	}
	// A prefix of seen bytes shares their address but not their content.
	if name, version := h.get(a[:len(a)-1]); version != cache.HashResource(a[:len(a)-1]) {
		t.Fatalf("prefix: %q %q answered from the memo", name, version)
	}
	for i := 0; i < memoMax+10; i++ {
		h.get(encode(t, &clusterv3.Cluster{Name: fmt.Sprint(i)}))
	}
	if len(h.m) > memoMax {
		t.Fatalf("memo holds %d entries, more than %d", len(h.m), memoMax)
	}
}

// What the memo saves: an Envoy's SotW response of a resource another
// stream was already sent (hit) against hashing it anew (miss).
func BenchmarkHashMemo(b *testing.B) {
	routes := &routev3.RouteConfiguration{Name: "ingress/ns/a"}
	for i := 0; i < 20; i++ {
		routes.VirtualHosts = append(routes.VirtualHosts, &routev3.VirtualHost{
			Name: fmt.Sprint("v", i), Domains: []string{fmt.Sprintf("h%d.ns.example.com", i)},
			Routes: []*routev3.Route{{Name: "r", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}}})
	}
	enc := encode(b, routes)
	b.Run("hit", func(b *testing.B) {
		var h hashMemo
		h.get(enc)
		b.ReportAllocs()
		for b.Loop() {
			h.get(enc)
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = resourceName(enc), cache.HashResource(enc)
		}
	})
}
