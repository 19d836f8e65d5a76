// Package bootstrap writes the Envoy bootstrap that connects an Envoy to
// Sluice over ADS.
package bootstrap

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"
)

// XDSCluster is the name of the bootstrap's static cluster for Sluice.
const XDSCluster = "sluice-xds"

// Options shape the bootstrap.
type Options struct {
	// XDSAddress is host:port of Sluice's xDS port (an IP or a DNS name),
	// or several, comma separated: one per replica, so that an Envoy whose
	// replica dies reconnects to another.
	XDSAddress string
	// NodeID is the Envoy's identity; in a cluster its pod name. Envoy's
	// --service-node flag overrides it.
	NodeID string
	// NodeCluster is the gateway name.
	NodeCluster string
	// AdminAddress is host:port of Envoy's admin interface; keep it on
	// loopback.
	AdminAddress string
	// SotW selects state-of-the-world ADS instead of delta.
	SotW bool
	// MaxConnections bounds the downstream connections Envoy holds, and
	// MaxHeapBytes its heap; 0 is no bound (see overload.go).
	MaxConnections uint64
	MaxHeapBytes   uint64
	// TLS, when set, makes the xDS connection mutual TLS (see tls.go).
	TLS TLSFiles
}

// Build returns the bootstrap for opts.
func Build(o Options) (*bootstrapv3.Bootstrap, error) {
	var xds []*endpointv3.LbEndpoint
	var hosts []string
	discovery := clusterv3.Cluster_STATIC
	for _, a := range strings.Split(o.XDSAddress, ",") {
		h, p, err := hostPort("xds-address", strings.TrimSpace(a))
		if err != nil {
			return nil, err
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
		if net.ParseIP(h) == nil {
			discovery = clusterv3.Cluster_STRICT_DNS
		}
		xds = append(xds, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socket(h, p)}},
		})
	}
	ahost, aport, err := hostPort("admin-address", o.AdminAddress)
	if err != nil {
		return nil, err
	}
	if o.NodeID == "" || o.NodeCluster == "" {
		return nil, fmt.Errorf("node-id and node-cluster must not be empty")
	}
	apiType := corev3.ApiConfigSource_DELTA_GRPC
	if o.SotW {
		apiType = corev3.ApiConfigSource_GRPC
	}
	h2, err := anypb.New(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				// Keep the stream alive and notice a dead control plane.
				ConnectionKeepalive: &corev3.KeepaliveSettings{
					Interval: durationpb.New(30 * time.Second),
					Timeout:  durationpb.New(5 * time.Second),
				},
			}},
		}},
	})
	if err != nil {
		return nil, err
	}
	om, err := overload(o)
	if err != nil {
		return nil, err
	}
	sinks, err := reportSink(o.NodeID)
	if err != nil {
		return nil, err
	}
	tlsSocket, err := xdsTLS(o.TLS, hosts)
	if err != nil {
		return nil, err
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	return &bootstrapv3.Bootstrap{
		Node:               &corev3.Node{Id: o.NodeID, Cluster: o.NodeCluster},
		Admin:              &bootstrapv3.Admin{Address: socket(ahost, aport)},
		OverloadManager:    om,
		StatsSinks:         sinks,
		StatsFlushInterval: durationpb.New(ReportInterval),
		// A cluster's traffic stats are made when first used: most
		// revisions of a Knative fleet sit idle or at zero, and every
		// revision is a cluster.
		DeferredStatOptions: &bootstrapv3.Bootstrap_DeferredStatOptions{EnableDeferredCreationStats: true},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             apiType,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSCluster,
						// Back within seconds of a controller's return, not
						// Envoy's default of up to 30 s.
						RetryPolicy: &corev3.RetryPolicy{RetryBackOff: &corev3.BackoffStrategy{
							BaseInterval: durationpb.New(250 * time.Millisecond),
							MaxInterval:  durationpb.New(3 * time.Second),
						}}},
				}}},
				SetNodeOnFirstMessageOnly: true,
			},
			CdsConfig: ads,
			LdsConfig: ads,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{
			Name:                          XDSCluster,
			ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: discovery},
			ConnectTimeout:                durationpb.New(time.Second),
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
			TransportSocket:               tlsSocket,
			// xDS is one long stream: no circuit breaking on it.
			CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: wrapperspb.UInt32(100000), MaxPendingRequests: wrapperspb.UInt32(100000),
				MaxRequests: wrapperspb.UInt32(100000),
			}}},
			LoadAssignment: &endpointv3.ClusterLoadAssignment{
				ClusterName: XDSCluster,
				Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: xds}},
			},
		}}},
	}, nil
}

// YAML renders the bootstrap with Envoy's field names.
func YAML(b *bootstrapv3.Bootstrap) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

func hostPort(flag, s string) (string, uint32, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %v", flag, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || h == "" {
		return "", 0, fmt.Errorf("%s: %q is not host:port", flag, s)
	}
	return h, uint32(n), nil
}

func socket(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
