package bootstrap

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// TLSFiles are the PEM files an Envoy presents to Sluice and trusts it
// with (its client certificate and key, the CA that signs Sluice's server
// certificate), and SDSDir, where the two SDS files naming them go (see
// SDSFiles). Envoy reads the certificates through those and again whenever
// something is moved into their directory, as a Secret volume's update
// does: a renewed certificate is used without a restart or a dropped
// stream.
type TLSFiles struct{ Cert, Key, CA, SDSDir string }

// SDS names of the Envoy's certificate and of the CA it trusts.
const (
	ClientSecret = "sluice-xds-client"
	CASecret     = "sluice-xds-ca"
)

func (f TLSFiles) enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

func (f TLSFiles) check() error {
	if f.Cert == "" || f.Key == "" || f.CA == "" || f.SDSDir == "" {
		return fmt.Errorf("xds-tls-cert, xds-tls-key, xds-tls-ca and xds-tls-sds-dir go together")
	}
	return nil
}

func (f TLSFiles) sdsPath(secret string) string { return filepath.Join(f.SDSDir, secret+".yaml") }

func fileSource(p string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
}

// SDSFiles returns the SDS files of f, by path: each a discovery response
// holding one secret whose data are read from f's PEM files.
func SDSFiles(f TLSFiles) (map[string][]byte, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, s := range []*tlsv3.Secret{
		{Name: ClientSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: fileSource(f.Cert), PrivateKey: fileSource(f.Key),
			WatchedDirectory: &corev3.WatchedDirectory{Path: filepath.Dir(f.Cert)},
		}}},
		{Name: CASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: fileSource(f.CA), WatchedDirectory: &corev3.WatchedDirectory{Path: filepath.Dir(f.CA)},
		}}},
	} {
		b, err := sdsYAML(s)
		if err != nil {
			return nil, err
		}
		out[f.sdsPath(s.Name)] = b
	}
	return out, nil
}

func sdsYAML(m proto.Message) ([]byte, error) {
	a, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{a}})
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

// xdsTLS is the transport socket of the xDS cluster: TLS 1.3 with the
// Envoy's certificate, the server's chain checked against the CA and its
// name against the hosts of the xDS addresses.
func xdsTLS(f TLSFiles, hosts []string) (*corev3.TransportSocket, error) {
	if !f.enabled() {
		return nil, nil
	}
	if err := f.check(); err != nil {
		return nil, err
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
	path := func(secret string) *corev3.ConfigSource {
		return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: f.sdsPath(secret)}}}
	}
	ctx, err := anypb.New(&tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			AlpnProtocols:                  []string{"h2"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: ClientSecret, SdsConfig: path(ClientSecret)}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: CASecret, SdsConfig: path(CASecret)},
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: ctx}}, nil
}
