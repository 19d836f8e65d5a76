package xds

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// scopedListener selects a scope by the host (without port) and gets
// scopes and their route configurations over ADS.
func scopedListener(name string, port int) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	h, _ := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_ScopedRoutes{ScopedRoutes: &hcmv3.ScopedRoutes{
			Name: name,
			ScopeKeyBuilder: &hcmv3.ScopedRoutes_ScopeKeyBuilder{Fragments: []*hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder{{
				Type: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_{
					HeaderValueExtractor: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor{
						Name: ":authority", ElementSeparator: ":",
						ExtractType: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index{Index: 0},
					},
				},
			}}},
			RdsConfigSource: adsSource(),
			ConfigSpecifier: &hcmv3.ScopedRoutes_ScopedRds{ScopedRds: &hcmv3.ScopedRds{ScopedRdsConfigSource: adsSource()}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	return &listenerv3.Listener{
		Name: name,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
		}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: h},
		}}}},
	}
}

func scopeOf(host, routes string) *routev3.ScopedRouteConfiguration {
	return &routev3.ScopedRouteConfiguration{Name: host, RouteConfigurationName: routes,
		Key: &routev3.ScopedRouteConfiguration_Key{Fragments: []*routev3.ScopedRouteConfiguration_Key_Fragment{{
			Type: &routev3.ScopedRouteConfiguration_Key_Fragment_StringKey{StringKey: host},
		}}}}
}

// TestRealEnvoyScopes: scopes and their route configurations reach a real
// Envoy over SotW and delta ADS, and so do a scope's removal (SotW SRDS
// responses are the whole set) and a scope moving to another route
// configuration.
func TestRealEnvoyScopes(t *testing.T) {
	for _, api := range []string{"GRPC", "DELTA_GRPC"} {
		t.Run(api, func(t *testing.T) { testRealEnvoyScopes(t, api) })
	}
}

func testRealEnvoyScopes(t *testing.T, api string) {
	s := startServer(t, Options{})
	startEnvoy(t, s.addr, api)
	lport := freePort(t)
	ip1, p1 := backend(t, "one")
	ip2, p2 := backend(t, "two")
	portless := func(r *routev3.RouteConfiguration) *routev3.RouteConfiguration {
		r.IgnorePortInHostMatching = true
		return r
	}
	snap := Snapshot{
		Clusters:  msgs(cluster("one"), cluster("two")),
		Endpoints: map[string]proto.Message{"one": withPort(cla("one", ip1), p1), "two": withPort(cla("two", ip2), p2)},
		Listeners: msgs(scopedListener("http", lport)),
		Routes:    msgs(route("rc-one", "one"), portless(route("rc-two", "two"))),
		Scopes:    msgs(scopeOf("one.example.com", "rc-one"), scopeOf("two.example.com", "rc-two")),
	}
	set := func() {
		t.Helper()
		if err := s.SetSnapshot(cloneSnapshot(snap)); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(host string, code int, body string) {
		t.Helper()
		eventually(t, host+" answers "+body, func() bool { c, b := get(lport, host); return c == code && (body == "" || b == body) })
	}
	set()
	expect("one.example.com", 200, "one")
	expect("two.example.com:8080", 200, "two")
	expect("three.example.com", 404, "")

	// Two's scope goes: two is unknown, one stays.
	snap.Scopes = msgs(scopeOf("one.example.com", "rc-one"))
	snap.Routes = msgs(route("rc-one", "one"))
	set()
	expect("two.example.com", 404, "")
	if c, b := get(lport, "one.example.com"); c != 200 || b != "one" {
		t.Fatalf("one after two's removal: %d %q", c, b)
	}

	// One's scope moves to a route configuration sending its host to two.
	moved := route("rc-moved", "two")
	moved.VirtualHosts[0].Domains = []string{"one.example.com"}
	snap.Scopes = msgs(scopeOf("one.example.com", "rc-moved"))
	snap.Routes = msgs(moved)
	set()
	expect("one.example.com", 200, "two")
	eventually(t, "rc-one to go", func() bool {
		_, has := s.Nodes()[0].Types[RouteType].Acked["rc-one"]
		return !has
	})
	for typeURL, ts := range s.Nodes()[0].Types {
		if ts.LastNack != nil {
			t.Errorf("%s NACKed: %+v", typeLabel(typeURL), ts.LastNack)
		}
	}
}
