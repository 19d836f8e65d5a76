package bootstrap

import (
	"fmt"
	"net"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// TLSFiles are the PEM files an Envoy presents to Sluice and trusts it
// with: its client certificate and key, and the CA that signs Sluice's
// server certificate. Envoy reads them when it starts.
type TLSFiles struct{ Cert, Key, CA string }

// xdsTLS is the transport socket of the xDS cluster: TLS 1.3 with the
// Envoy's certificate, the server's chain checked against the CA and its
// name against the hosts of the xDS addresses.
func xdsTLS(f TLSFiles, hosts []string) (*corev3.TransportSocket, error) {
	if f.Cert == "" && f.Key == "" && f.CA == "" {
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, fmt.Errorf("xds-tls-cert, xds-tls-key and xds-tls-ca go together")
	}
	file := func(p string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
	}
	var sans []*tlsv3.SubjectAltNameMatcher
	sni := ""
	for _, h := range hosts {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		if net.ParseIP(h) != nil {
			typ = tlsv3.SubjectAltNameMatcher_IP_ADDRESS
		} else if sni == "" {
			sni = strings.ToLower(h)
		}
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{SanType: typ,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: strings.ToLower(h)}}})
	}
	ctx, err := anypb.New(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			AlpnProtocols:   []string{"h2"},
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(f.Cert), PrivateKey: file(f.Key)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: file(f.CA), MatchTypedSubjectAltNames: sans,
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}}, nil
}
