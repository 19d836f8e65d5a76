package translator

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Tracing with OpenTelemetry: every connection manager sends spans to one
// OTLP collector (gRPC or HTTP) through the TracingCluster; every route
// tags its spans with its ingress, and Envoy tags the upstream cluster,
// which names the revision.

// TracingCluster is the cluster of the OTLP collector.
const TracingCluster = "sluice-tracing"

// Tracing protocols (Config.TracingProtocol).
const (
	TracingGRPC = "grpc"
	TracingHTTP = "http"
)

// IngressTag is the span tag naming the ingress ("namespace/name").
const IngressTag = "knative.ingress"

func tracing(cfg *Config) *hcmv3.HttpConnectionManager_Tracing {
	if cfg.TracingCollector == "" {
		return nil
	}
	otel := &tracev3.OpenTelemetryConfig{ServiceName: cfg.TracingServiceName}
	if cfg.TracingProtocol == TracingHTTP {
		otel.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{
			Uri:              "http://" + cfg.TracingCollector + "/v1/traces",
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: TracingCluster},
			Timeout:          durationpb.New(5 * time.Second),
		}}
	} else {
		otel.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingCluster}}}
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: cfg.TracingSampling},
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(otel)}},
	}
}

// routeTracing tags a route's spans with its ingress, when tracing is on.
func routeTracing(cfg *Config, namespace, name string) *routev3.Tracing {
	if cfg.TracingCollector == "" {
		return nil
	}
	return &routev3.Tracing{CustomTags: []*tracingv3.CustomTag{{
		Tag:  IngressTag,
		Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: namespace + "/" + name}},
	}}}
}

// tracingCluster reaches the collector.
func tracingCluster(cfg *Config) *clusterv3.Cluster {
	if cfg.TracingCollector == "" {
		return nil
	}
	return serviceCluster(TracingCluster, cfg.TracingCollector, cfg.TracingProtocol != TracingHTTP, cfg)
}

// serviceCluster reaches a service the config names by host:port: by
// address, or by DNS name; over HTTP/2 (gRPC) if h2.
func serviceCluster(name, hostPort string, h2 bool, cfg *Config) *clusterv3.Cluster {
	host, portStr, _ := net.SplitHostPort(hostPort)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(cfg.ConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(host, uint32(port)),
			}}}},
		}}},
	}
	if _, err := netip.ParseAddr(host); err == nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	}
	if h2 {
		c.TypedExtensionProtocolOptions = http2Options()
	}
	return c
}

// checkHostPort reports whether s is host:port.
func checkHostPort(key, s string) error {
	host, port, err := net.SplitHostPort(s)
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || n == 0 {
		return fmt.Errorf("%s: %q is not host:port", key, s)
	}
	return nil
}

// checkTracing reports the first tracing setting Envoy would refuse.
func (c *Config) checkTracing() error {
	if c.TracingCollector == "" {
		return nil
	}
	if err := checkHostPort("tracing-collector", c.TracingCollector); err != nil {
		return err
	}
	switch c.TracingProtocol {
	case TracingGRPC, TracingHTTP:
	default:
		return fmt.Errorf("tracing-protocol: %q is not %s or %s", c.TracingProtocol, TracingGRPC, TracingHTTP)
	}
	if c.TracingSampling < 0 || c.TracingSampling > 100 {
		return fmt.Errorf("tracing-sampling: %v is not a percentage (0-100)", c.TracingSampling)
	}
	if c.TracingServiceName == "" {
		return fmt.Errorf("tracing-service-name: empty")
	}
	return nil
}
