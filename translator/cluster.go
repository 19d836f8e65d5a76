package translator

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// ClusterName is the stable name of the cluster for one Service port.
func ClusterName(namespace, service string, port int32) string {
	return fmt.Sprintf("%s/%s:%d", namespace, service, port)
}

// SecretName is the SDS name of a Kubernetes TLS Secret.
func SecretName(namespace, name string) string { return namespace + "/" + name }

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// http2Options makes a cluster speak HTTP/2 (cleartext) upstream.
func http2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})}
}

func clusterFor(b v1alpha1.IngressBackend, field string, lookup Lookup, cfg *Config) (*clusterv3.Cluster, Backend, *Error) {
	svc, ok := lookup.Service(b.ServiceNamespace, b.ServiceName)
	if !ok {
		return nil, Backend{}, errorf(ReasonServiceNotFound, "%s: service %s/%s not found", field, b.ServiceNamespace, b.ServiceName)
	}
	port, ok := servicePort(svc, b.ServicePort)
	if !ok {
		return nil, Backend{}, errorf(ReasonPortNotFound, "%s.servicePort: service %s/%s has no port %s",
			field, b.ServiceNamespace, b.ServiceName, b.ServicePort.String())
	}
	name := ClusterName(svc.Namespace, svc.Name, port.Port)
	backend := Backend{Namespace: svc.Namespace, Service: svc.Name, PortName: port.Name, Port: port.Port}
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(cfg.ConnectTimeout),
		// The gateway carries all traffic of a service: the default
		// thresholds (1024) would queue or reject bursts.
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections:     wrapperspb.UInt32(1 << 20),
			MaxPendingRequests: wrapperspb.UInt32(1 << 20),
			MaxRequests:        wrapperspb.UInt32(1 << 20),
			MaxRetries:         wrapperspb.UInt32(1 << 20),
		}}},
	}
	if isH2C(port) {
		c.TypedExtensionProtocolOptions = http2Options()
	}

	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		backend.External = true
		host, hostPort := strings.ToLower(strings.TrimSuffix(svc.Spec.ExternalName, ".")), uint32(port.Port)
		if host == "" {
			return nil, Backend{}, errorf(ReasonInvalid, "%s: ExternalName service %s/%s has no externalName", field, svc.Namespace, svc.Name)
		}
		if slices.Contains(cfg.LocalGatewayDomains, host) {
			// Our own private gateway: go straight to the internal listener.
			host, hostPort = localAddress(cfg), cfg.InternalHTTPPort
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		} else {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
		}
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{
				lbEndpoint(host, hostPort),
			}}},
		}
		return c, backend, nil
	}

	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
	if wantsInternalTLS(cfg, svc, port) {
		if err := internalTLS(c, svc, field, cfg); err != nil {
			return nil, Backend{}, err
		}
	}
	return c, backend, nil
}

// servicePort finds the port a split names: by number, or by name.
func servicePort(svc *corev1.Service, want intstr.IntOrString) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if (want.Type == intstr.Int && p.Port == want.IntVal) || (want.Type == intstr.String && p.Name == want.StrVal) {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// isH2C: Knative names its h2c ports http2 (revision port 81); Kubernetes
// says the same with appProtocol.
func isH2C(p corev1.ServicePort) bool {
	if p.AppProtocol != nil && *p.AppProtocol == "kubernetes.io/h2c" {
		return true
	}
	return p.Name == "http2" || p.Name == "h2c" || strings.HasPrefix(p.Name, "http2-") || strings.HasPrefix(p.Name, "h2c-")
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func lbEndpoint(host string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: socketAddress(host, port),
	}}}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// secretResource turns a kubernetes.io/tls Secret into an SDS secret,
// checking the pair here so a bad certificate is a clear condition on the
// ingress instead of an Envoy NACK.
func secretResource(s *corev1.Secret) (*tlsv3.Secret, error) {
	crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("secret %s/%s: needs both %s and %s", s.Namespace, s.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		return nil, fmt.Errorf("secret %s/%s: %v", s.Namespace, s.Name, err)
	}
	return &tlsv3.Secret{
		Name: SecretName(s.Namespace, s.Name),
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: crt}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
		}},
	}, nil
}

// localAddress is where this Envoy's own listeners are reachable: loopback
// when they bind every address, else the first address they bind.
func localAddress(cfg *Config) string {
	addrs := cfg.listenAddresses()
	switch {
	case len(addrs) == 0:
		return "127.0.0.1"
	case !addrs[0].IsUnspecified():
		return addrs[0].String()
	case addrs[0].Is6() && len(addrs) > 1:
		return "::1" // "::" beside other addresses takes IPv6 only
	}
	return "127.0.0.1"
}
