package xds

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// quiet is how long a test waits to conclude that nothing is sent.
const quiet = 300 * time.Millisecond

type testServer struct {
	*Server
	addr string
	reg  *prometheus.Registry
}

func startServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registry = reg
	if opts.AckTimeout == 0 {
		opts.AckTimeout = 5 * time.Second
	}
	s := New(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, addr: lis.Addr().String(), reg: reg}
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// metric returns the value of a counter or gauge with the given type label
// ("" for none).
func (s *testServer) metric(t *testing.T, name, typ string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			label := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "type" {
					label = l.GetValue()
				}
			}
			if label != typ {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// --- resources ---

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
	}
}

func cla(name string, ips ...string) *endpointv3.ClusterLoadAssignment {
	c := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	var lbs []*endpointv3.LbEndpoint
	for _, ip := range ips {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: &core.Address{Address: &core.Address_SocketAddress{
				SocketAddress: &core.SocketAddress{Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: 8080}},
			}}},
		}})
	}
	c.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return c
}

func listener(name, routeName, stat string) *listenerv3.Listener {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: stat,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName, ConfigSource: adsSource(),
		}},
	}
	a, err := anypb.New(h)
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &core.Address{Address: &core.Address_SocketAddress{
			SocketAddress: &core.SocketAddress{Address: "0.0.0.0", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 8080}},
		}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
		}}}},
	}
}

// route sends host i.example.com to clusters[i].
func route(name string, clusters ...string) *routev3.RouteConfiguration {
	r := &routev3.RouteConfiguration{Name: name}
	for _, c := range clusters {
		r.VirtualHosts = append(r.VirtualHosts, &routev3.VirtualHost{
			Name: c, Domains: []string{c + ".example.com"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}},
			}},
		})
	}
	return r
}

func secret(name string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "cert-" + name}},
	}}}
}

func msgs[T proto.Message](in ...T) map[string]proto.Message {
	out := map[string]proto.Message{}
	for _, m := range in {
		out[nameOf(m)] = m
	}
	return out
}

func nameOf(m proto.Message) string {
	if c, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		return c.GetClusterName()
	}
	return m.(interface{ GetName() string }).GetName()
}

// snapshot builds the usual state: clusters with one endpoint each, one
// listener "http" using route config "rc" that routes to routeTo.
func snapshot(clusters []string, routeTo []string) Snapshot {
	s := Snapshot{Clusters: map[string]proto.Message{}, Endpoints: map[string]proto.Message{}}
	for _, c := range clusters {
		s.Clusters[c] = cluster(c)
		s.Endpoints[c] = cla(c, "10.0.0.1")
	}
	s.Listeners = msgs(listener("http", "rc", "http"))
	s.Routes = msgs(route("rc", routeTo...))
	return s
}

func cloneSnapshot(s Snapshot) Snapshot {
	cp := func(in map[string]proto.Message) map[string]proto.Message {
		out := map[string]proto.Message{}
		for k, v := range in {
			out[k] = proto.Clone(v)
		}
		return out
	}
	return Snapshot{Clusters: cp(s.Clusters), Endpoints: cp(s.Endpoints), Listeners: cp(s.Listeners), Routes: cp(s.Routes), Scopes: cp(s.Scopes), Secrets: cp(s.Secrets)}
}

func node(id string) *core.Node { return &core.Node{Id: id, Cluster: "gateway-external"} }

// --- a SotW Envoy ---

type sotwEnvoy struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	resps  chan *discovery.DiscoveryResponse
	cancel context.CancelFunc
}

func newSotwEnvoy(t *testing.T, addr, id string) *sotwEnvoy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := &sotwEnvoy{t: t, stream: st, node: node(id), resps: make(chan *discovery.DiscoveryResponse, 100), cancel: cancel}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				close(e.resps)
				return
			}
			e.resps <- r
		}
	}()
	t.Cleanup(cancel)
	return e
}

func (e *sotwEnvoy) send(req *discovery.DiscoveryRequest) {
	e.t.Helper()
	if e.node != nil {
		req.Node, e.node = e.node, nil
	}
	if err := e.stream.Send(req); err != nil {
		e.t.Fatal(err)
	}
}

// request subscribes (no nonce) to typeURL.
func (e *sotwEnvoy) request(typeURL string, names ...string) {
	e.t.Helper()
	e.send(&discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

// ack accepts r, keeping (or changing to) the given subscription.
func (e *sotwEnvoy) ack(r *discovery.DiscoveryResponse, names ...string) {
	e.t.Helper()
	e.send(&discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: names})
}

func (e *sotwEnvoy) nack(r *discovery.DiscoveryResponse, oldVersion, msg string, names ...string) {
	e.t.Helper()
	e.send(&discovery.DiscoveryRequest{
		TypeUrl: r.GetTypeUrl(), VersionInfo: oldVersion, ResponseNonce: r.GetNonce(), ResourceNames: names,
		ErrorDetail: &status.Status{Code: 3, Message: msg},
	})
}

func (e *sotwEnvoy) recv() *discovery.DiscoveryResponse {
	e.t.Helper()
	select {
	case r, ok := <-e.resps:
		if !ok {
			e.t.Fatal("stream closed")
		}
		return r
	case <-time.After(10 * time.Second):
		e.t.Fatal("no response")
	}
	return nil
}

// expect receives the next response and checks its type and resource names.
func (e *sotwEnvoy) expect(typeURL string, names ...string) *discovery.DiscoveryResponse {
	e.t.Helper()
	r := e.recv()
	if r.GetTypeUrl() != typeURL {
		e.t.Fatalf("got a %s response (%v), want %s", typeLabel(r.GetTypeUrl()), anyNames(r.GetResources()), typeLabel(typeURL))
	}
	if got := anyNames(r.GetResources()); names != nil && !slices.Equal(got, sorted(names)) {
		e.t.Fatalf("%s response has %v, want %v", typeLabel(typeURL), got, sorted(names))
	}
	return r
}

func (e *sotwEnvoy) none() {
	e.t.Helper()
	select {
	case r := <-e.resps:
		e.t.Fatalf("unexpected %s response %v", typeLabel(r.GetTypeUrl()), anyNames(r.GetResources()))
	case <-time.After(quiet):
	}
}

// boot does what Envoy does on start: CDS, EDS for the clusters, LDS, RDS
// for the routes, ACKing each.
func (e *sotwEnvoy) boot(clusters []string) {
	e.t.Helper()
	e.request(ClusterType)
	e.ack(e.expect(ClusterType, clusters...))
	e.request(EndpointType, clusters...)
	e.ack(e.expect(EndpointType, clusters...), clusters...)
	e.request(ListenerType)
	e.ack(e.expect(ListenerType, "http"))
	e.request(RouteType, "rc")
	e.ack(e.expect(RouteType, "rc"), "rc")
}

func anyNames(as []*anypb.Any) []string {
	var out []string
	for _, a := range as {
		m, err := a.UnmarshalNew()
		if err != nil {
			panic(err)
		}
		out = append(out, nameOf(m))
	}
	slices.Sort(out)
	return out
}

func sorted(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

// --- a delta Envoy ---

type deltaEnvoy struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *core.Node
	resps  chan *discovery.DeltaDiscoveryResponse
}

func newDeltaEnvoy(t *testing.T, addr, id string) *deltaEnvoy {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discovery.NewAggregatedDiscoveryServiceClient(dial(t, addr)).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := &deltaEnvoy{t: t, stream: st, node: node(id), resps: make(chan *discovery.DeltaDiscoveryResponse, 100)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				close(e.resps)
				return
			}
			e.resps <- r
		}
	}()
	t.Cleanup(cancel)
	return e
}

func (e *deltaEnvoy) send(req *discovery.DeltaDiscoveryRequest) {
	e.t.Helper()
	if e.node != nil {
		req.Node, e.node = e.node, nil
	}
	if err := e.stream.Send(req); err != nil {
		e.t.Fatal(err)
	}
}

func (e *deltaEnvoy) subscribe(typeURL string, names ...string) {
	e.t.Helper()
	e.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

func (e *deltaEnvoy) ack(r *discovery.DeltaDiscoveryResponse) {
	e.t.Helper()
	e.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func (e *deltaEnvoy) recv() *discovery.DeltaDiscoveryResponse {
	e.t.Helper()
	select {
	case r, ok := <-e.resps:
		if !ok {
			e.t.Fatal("stream closed")
		}
		return r
	case <-time.After(10 * time.Second):
		e.t.Fatal("no response")
	}
	return nil
}

// expect receives the next response and checks its type, the names it
// sends and the names it removes.
func (e *deltaEnvoy) expect(typeURL string, names, removed []string) *discovery.DeltaDiscoveryResponse {
	e.t.Helper()
	r := e.recv()
	var got []string
	for _, res := range r.GetResources() {
		got = append(got, res.GetName())
	}
	slices.Sort(got)
	if r.GetTypeUrl() != typeURL {
		e.t.Fatalf("got a %s response (%v), want %s", typeLabel(r.GetTypeUrl()), got, typeLabel(typeURL))
	}
	if !slices.Equal(got, sorted(names)) || !slices.Equal(sorted(r.GetRemovedResources()), sorted(removed)) {
		e.t.Fatalf("%s response sends %v removes %v, want %v and %v", typeLabel(typeURL), got, r.GetRemovedResources(), names, removed)
	}
	return r
}

func (e *deltaEnvoy) none() {
	e.t.Helper()
	select {
	case r := <-e.resps:
		e.t.Fatalf("unexpected %s response", typeLabel(r.GetTypeUrl()))
	case <-time.After(quiet):
	}
}

func (e *deltaEnvoy) boot(clusters []string) {
	e.t.Helper()
	e.subscribe(ClusterType)
	e.ack(e.expect(ClusterType, clusters, nil))
	e.subscribe(EndpointType, clusters...)
	e.ack(e.expect(EndpointType, clusters, nil))
	e.subscribe(ListenerType)
	e.ack(e.expect(ListenerType, []string{"http"}, nil))
	e.subscribe(RouteType, "rc")
	e.ack(e.expect(RouteType, []string{"rc"}, nil))
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type discoveryDeltaRequest = discovery.DeltaDiscoveryRequest
type endpointCLA = endpointv3.ClusterLoadAssignment
