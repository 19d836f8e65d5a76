package translator

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Config holds what the translator needs besides the ingresses. The zero
// value is not useful; start from DefaultConfig.
type Config struct {
	// Ports of the four listeners Envoy opens.
	ExternalHTTPPort  uint32
	ExternalHTTPSPort uint32
	InternalHTTPPort  uint32
	InternalHTTPSPort uint32
	// ListenAddress is the address every listener binds, or several,
	// comma separated ("0.0.0.0,::" for dual stack; "::" alone takes IPv4
	// too).
	ListenAddress string

	// StreamIdleTimeout bounds how long a stream may stay quiet; zero is no
	// bound (not Envoy's 5 minutes, which cut WebSockets and gRPC streams).
	// IdleTimeout bounds downstream connections without a stream; zero
	// keeps Envoy's hour. Routes never get a request timeout: the KIngress
	// contract forbids one.
	StreamIdleTimeout time.Duration
	IdleTimeout       time.Duration
	// ConnectTimeout bounds upstream TCP connects.
	ConnectTimeout time.Duration

	// DefaultCertificate, "namespace/name" of a TLS Secret, is served on the
	// HTTPS listeners to clients whose SNI matches no ingress's tls entry.
	DefaultCertificate string

	// LocalGatewayDomains are the domains of this gateway's own Services
	// (the private one's domainInternal). An ExternalName Service pointing at
	// one of them is routed straight to the local internal listener instead
	// of through DNS, which is how rewriteHost reaches cluster-local hosts.
	LocalGatewayDomains []string

	// AccessLog is where Envoy logs each request: AccessLogStdout (the
	// default), AccessLogStderr or AccessLogOff. AccessLogFormat (a text
	// format of Envoy command operators) or AccessLogJSON (a JSON object of
	// field names to such formats) shape the line; neither is Envoy's
	// default text format. Knative's probes are left out unless
	// AccessLogProbes.
	AccessLog       string
	AccessLogFormat string
	AccessLogJSON   string
	AccessLogProbes bool

	// TLSMinVersion and TLSMaxVersion ("1.0" to "1.3") and TLSCipherSuites
	// (TLS 1.2 suites by their OpenSSL names) bound the HTTPS listeners;
	// empty keeps Envoy's defaults.
	TLSMinVersion, TLSMaxVersion string
	TLSCipherSuites              []string
	// ServerHeader is what Envoy does with the Server response header:
	// "overwrite" (Envoy's default), "append-if-absent" or
	// "pass-through"; ServerName is the value it writes ("envoy" if empty).
	ServerHeader, ServerName string

	// ProxyProtocol makes the external listeners read a PROXY protocol
	// header (and refuse connections without one). TrustedHops is how many
	// proxies in front add trusted X-Forwarded-For entries.
	ProxyProtocol bool
	TrustedHops   uint32

	// TracingCollector, host:port of an OpenTelemetry collector, turns
	// tracing on; TracingProtocol is TracingGRPC or TracingHTTP,
	// TracingSampling the percentage of requests traced, TracingServiceName
	// the service the spans say they come from.
	TracingCollector   string
	TracingProtocol    string
	TracingSampling    float64
	TracingServiceName string

	// ExtAuthzAddress, host:port of an authorization service, makes every
	// request ask it first (see extauthz.go), over ExtAuthzProtocol
	// (ExtAuthzGRPC or ExtAuthzHTTP), waiting ExtAuthzTimeout; a service
	// that fails lets requests through only if ExtAuthzFailOpen. Up to
	// ExtAuthzBodyBytes of the body go along; an HTTP service gets paths
	// under ExtAuthzPathPrefix and, beside Envoy's defaults, the headers
	// ExtAuthzHeaders. ExtAuthzPackAsBytes sends a gRPC service the body
	// as raw bytes rather than a UTF-8 string.
	ExtAuthzAddress     string
	ExtAuthzProtocol    string
	ExtAuthzTimeout     time.Duration
	ExtAuthzFailOpen    bool
	ExtAuthzBodyBytes   uint32
	ExtAuthzPathPrefix  string
	ExtAuthzHeaders     []string
	ExtAuthzPackAsBytes bool

	// CORSAllowOrigins ("*" or origins like https://example.com) turns
	// CORS on for every ingress, with the methods, request headers and
	// exposed response headers listed, preflights cached for CORSMaxAge,
	// and credentials if CORSAllowCredentials.
	CORSAllowOrigins, CORSAllowMethods  []string
	CORSAllowHeaders, CORSExposeHeaders []string
	CORSMaxAge                          time.Duration
	CORSAllowCredentials                bool

	// SystemInternalTLS (config-network's system-internal-tls) makes Envoy
	// speak TLS to the HTTPS port of revision Services, trusting the PEM
	// CAs of InternalCA (see TrustBundle and internaltls.go).
	SystemInternalTLS bool
	InternalCA        []byte
}

// DefaultConfig returns the defaults documented in the README.
func DefaultConfig() Config {
	return Config{
		ExternalHTTPPort:   8080,
		ExternalHTTPSPort:  8443,
		InternalHTTPPort:   8081,
		InternalHTTPSPort:  8444,
		ListenAddress:      "0.0.0.0",
		ConnectTimeout:     5 * time.Second,
		AccessLog:          AccessLogStdout,
		TracingProtocol:    TracingGRPC,
		TracingSampling:    100,
		TracingServiceName: "sluice-gateway",
		ExtAuthzProtocol:   ExtAuthzGRPC,
		ExtAuthzTimeout:    2 * time.Second,
	}
}

// NamedPort is one listener port of a Config and the key that sets it, in
// config-sluice and as a controller flag.
type NamedPort struct {
	Key  string
	Port *uint32
}

// Ports lists c's listener ports, always in this order.
func (c *Config) Ports() []NamedPort {
	return []NamedPort{
		{"external-http-port", &c.ExternalHTTPPort},
		{"external-https-port", &c.ExternalHTTPSPort},
		{"internal-http-port", &c.InternalHTTPPort},
		{"internal-https-port", &c.InternalHTTPSPort},
	}
}

// Validate reports the first unusable setting.
func (c *Config) Validate() error {
	seen := map[uint32]string{}
	for _, np := range c.Ports() {
		p := *np.Port
		if p == 0 || p > 65535 {
			return fmt.Errorf("%s: %d is not a port", np.Key, p)
		}
		if other, ok := seen[p]; ok {
			return fmt.Errorf("%s: port %d is already used by %s", np.Key, p, other)
		}
		seen[p] = np.Key
	}
	// Envoy binds listeners to IP addresses only.
	seenAddr := map[netip.Addr]bool{}
	for _, a := range strings.Split(c.ListenAddress, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return fmt.Errorf("listen-address: %q is not an IP address", strings.TrimSpace(a))
		}
		if seenAddr[ip] {
			return fmt.Errorf("listen-address: %s is listed twice", ip)
		}
		seenAddr[ip] = true
	}
	if c.StreamIdleTimeout < 0 || c.IdleTimeout < 0 {
		return fmt.Errorf("timeouts must not be negative")
	}
	// Envoy requires connect_timeout > 0.
	if c.ConnectTimeout <= 0 {
		return fmt.Errorf("connect-timeout: %v must be positive", c.ConnectTimeout)
	}
	if err := c.checkAccessLog(); err != nil {
		return err
	}
	if err := c.checkTLS(); err != nil {
		return err
	}
	if err := c.checkTracing(); err != nil {
		return err
	}
	if err := c.checkExtAuthz(); err != nil {
		return err
	}
	return c.checkCORS()
}

// listenAddresses are the addresses of ListenAddress, valid once Validate
// passed.
func (c *Config) listenAddresses() []netip.Addr {
	var out []netip.Addr
	for _, a := range strings.Split(c.ListenAddress, ",") {
		if ip, err := netip.ParseAddr(strings.TrimSpace(a)); err == nil {
			out = append(out, ip)
		}
	}
	return out
}
