package translator

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/certificates"
	netcfg "knative.dev/networking/pkg/config"
)

// System-internal TLS (config-network's system-internal-tls): Serving then
// points every split at port 443 of the revision Services, where the
// activator and the queue-proxies serve TLS with certificates from
// Serving's routing CA. Envoy speaks TLS 1.3 there, trusts that CA and the
// trust bundles, and accepts only the names Serving issues: the
// activator's kn-routing and the queue-proxy's kn-user-<namespace>.
//
// The CAs are one SDS secret every such cluster refers to, so a rotated CA
// sends Envoy one secret, not every cluster again.

// InternalCASecret is the SDS name of the CAs trusted for
// system-internal TLS. The colon keeps it apart from Kubernetes Secrets'
// "namespace/name".
const InternalCASecret = "sluice:internal-ca"

// ReasonInternalCANotFound: system-internal TLS is on and nothing says
// which CA to trust.
const ReasonInternalCANotFound = "InternalCANotFound"

// TrustBundleLabel marks ConfigMaps whose values are PEM CAs to trust.
const TrustBundleLabel = networking.TrustBundleLabelKey

// RoutingCertSecret is Serving's Secret whose ca.crt signs the
// activator's and the queue-proxies' certificates.
const RoutingCertSecret = netcfg.ServingRoutingCertName

// SystemInternalTLS reads config-network's setting with Serving's own
// parser, so the deprecated spelling counts too.
func SystemInternalTLS(configNetwork map[string]string) (bool, error) {
	nc, err := netcfg.NewConfigFromMap(configNetwork)
	if err != nil {
		return false, err
	}
	return nc.SystemInternalTLSEnabled(), nil
}

// TrustBundle gathers the CAs for system-internal TLS, as Serving's
// activator does: ca.crt of the routing Secret (may be nil) and every value
// of the trust-bundle ConfigMaps, these in name and key order. What is not
// a certificate is left out (Envoy would refuse the whole secret) and
// named in problems.
func TrustBundle(routing *corev1.Secret, bundles []*corev1.ConfigMap) (bundle []byte, problems []string) {
	var out bytes.Buffer
	add := func(where string, data []byte) {
		n := 0
		for len(data) > 0 {
			var b *pem.Block
			b, data = pem.Decode(data)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				continue
			}
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where, err))
				continue
			}
			_ = pem.Encode(&out, &pem.Block{Type: b.Type, Bytes: b.Bytes})
			n++
		}
		if n == 0 {
			problems = append(problems, where+": no certificate")
		}
	}
	if routing != nil && len(routing.Data[certificates.CaCertName]) > 0 {
		add(fmt.Sprintf("Secret %s/%s[%s]", routing.Namespace, routing.Name, certificates.CaCertName), routing.Data[certificates.CaCertName])
	}
	sorted := append([]*corev1.ConfigMap(nil), bundles...)
	sort.Slice(sorted, func(i, j int) bool {
		return sorted[i].Namespace+"/"+sorted[i].Name < sorted[j].Namespace+"/"+sorted[j].Name
	})
	for _, cm := range sorted {
		keys := make([]string, 0, len(cm.Data))
		for k := range cm.Data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			add(fmt.Sprintf("ConfigMap %s/%s[%s]", cm.Namespace, cm.Name, k), []byte(cm.Data[k]))
		}
	}
	return out.Bytes(), problems
}

// wantsInternalTLS: the port Serving sends encrypted traffic to.
func wantsInternalTLS(cfg *Config, svc *corev1.Service, port corev1.ServicePort) bool {
	return cfg.SystemInternalTLS && svc.Spec.Type != corev1.ServiceTypeExternalName &&
		(port.Port == networking.ServiceHTTPSPort || port.Name == networking.ServicePortNameHTTPS)
}

// internalTLS makes c originate system-internal TLS to a Service of
// namespace ns. The HTTPS port does not say the revision's protocol; the
// Service's other port does: beside an h2c port Envoy speaks HTTP/2 over
// TLS, else HTTP/1.1 (which keeps WebSocket upgrades working).
func internalTLS(c *clusterv3.Cluster, svc *corev1.Service, field string, cfg *Config) *Error {
	if len(cfg.InternalCA) == 0 {
		return errorf(ReasonInternalCANotFound, "%s: system-internal-tls is enabled, but there is no CA to trust: Secret %s has no %s and no ConfigMap is labelled %s",
			field, RoutingCertSecret, certificates.CaCertName, TrustBundleLabel)
	}
	alpn := "http/1.1"
	for _, p := range svc.Spec.Ports {
		if isH2C(p) {
			alpn = "h2"
			c.TypedExtensionProtocolOptions = http2Options()
		}
	}
	san := func(name string) *tlsv3.SubjectAltNameMatcher {
		return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}}}
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		// What the activator and queue-proxy accept.
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
		AlpnProtocols: []string{alpn},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{
				san(certificates.DataPlaneRoutingSAN),
				san(certificates.DataPlaneUserSAN(strings.ToLower(svc.Namespace))),
			}},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: InternalCASecret, SdsConfig: adsSource()},
		}},
	}}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
	return nil
}

// internalCASecret is the SDS secret of the CAs, or nil when unused.
func internalCASecret(cfg *Config) *tlsv3.Secret {
	if !cfg.SystemInternalTLS || len(cfg.InternalCA) == 0 {
		return nil
	}
	return &tlsv3.Secret{Name: InternalCASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cfg.InternalCA}},
	}}}
}
