package translator

import (
	"fmt"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// TLS policy of the HTTPS listeners (versions, TLS 1.2 cipher suites) and
// the Server header policy of every connection manager. Envoy refuses a
// listener for a cipher it does not know, so names are checked here.

// tlsVersions maps the config-sluice spelling to Envoy's.
var tlsVersions = map[string]tlsv3.TlsParameters_TlsProtocol{
	"1.0": tlsv3.TlsParameters_TLSv1_0,
	"1.1": tlsv3.TlsParameters_TLSv1_1,
	"1.2": tlsv3.TlsParameters_TLSv1_2,
	"1.3": tlsv3.TlsParameters_TLSv1_3,
}

// cipherSuites are the TLS 1.2 suites Envoy 1.40 (BoringSSL) accepts; TLS
// 1.3 suites are not configurable in BoringSSL.
var cipherSuites = map[string]bool{
	"ECDHE-ECDSA-AES128-GCM-SHA256": true, "ECDHE-RSA-AES128-GCM-SHA256": true,
	"ECDHE-ECDSA-AES256-GCM-SHA384": true, "ECDHE-RSA-AES256-GCM-SHA384": true,
	"ECDHE-ECDSA-CHACHA20-POLY1305": true, "ECDHE-RSA-CHACHA20-POLY1305": true,
	"ECDHE-ECDSA-AES128-SHA": true, "ECDHE-RSA-AES128-SHA": true,
	"ECDHE-ECDSA-AES256-SHA": true, "ECDHE-RSA-AES256-SHA": true,
	"AES128-GCM-SHA256": true, "AES256-GCM-SHA384": true, "AES128-SHA": true, "AES256-SHA": true,
}

// serverHeaders maps the config-sluice spelling to Envoy's.
var serverHeaders = map[string]hcmv3.HttpConnectionManager_ServerHeaderTransformation{
	"overwrite":        hcmv3.HttpConnectionManager_OVERWRITE,
	"append-if-absent": hcmv3.HttpConnectionManager_APPEND_IF_ABSENT,
	"pass-through":     hcmv3.HttpConnectionManager_PASS_THROUGH,
}

// tlsParams is the HTTPS listeners' TLS parameters, nil for Envoy's
// defaults.
func tlsParams(cfg *Config) *tlsv3.TlsParameters {
	if cfg.TLSMinVersion == "" && cfg.TLSMaxVersion == "" && len(cfg.TLSCipherSuites) == 0 {
		return nil
	}
	return &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsVersions[cfg.TLSMinVersion], // "" is TLS_AUTO
		TlsMaximumProtocolVersion: tlsVersions[cfg.TLSMaxVersion],
		CipherSuites:              cfg.TLSCipherSuites,
	}
}

// checkTLS reports the first TLS or Server header setting Envoy would
// refuse.
func (c *Config) checkTLS() error {
	for _, v := range []struct{ key, value string }{{"tls-min-version", c.TLSMinVersion}, {"tls-max-version", c.TLSMaxVersion}} {
		if _, ok := tlsVersions[v.value]; v.value != "" && !ok {
			return fmt.Errorf("%s: %q is not 1.0, 1.1, 1.2 or 1.3", v.key, v.value)
		}
	}
	if c.TLSMinVersion != "" && c.TLSMaxVersion != "" && tlsVersions[c.TLSMinVersion] > tlsVersions[c.TLSMaxVersion] {
		return fmt.Errorf("tls-min-version %s is above tls-max-version %s", c.TLSMinVersion, c.TLSMaxVersion)
	}
	for _, s := range c.TLSCipherSuites {
		// [A|B] is a group BoringSSL treats as equally preferred.
		for _, name := range strings.Split(strings.Trim(s, "[]"), "|") {
			if !cipherSuites[name] {
				return fmt.Errorf("tls-cipher-suites: %q is not a TLS 1.2 cipher suite Envoy knows (TLS 1.3 suites are not configurable)", name)
			}
		}
	}
	if _, ok := serverHeaders[c.ServerHeader]; c.ServerHeader != "" && !ok {
		return fmt.Errorf("server-header: %q is not overwrite, append-if-absent or pass-through", c.ServerHeader)
	}
	return nil
}
