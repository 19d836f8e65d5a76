package translator

import (
	"fmt"
	"net/netip"
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
	// ListenAddress is the address every listener binds.
	ListenAddress string

	// StreamIdleTimeout and IdleTimeout bound idle streams and idle
	// downstream connections; zero keeps Envoy's default. Routes never get a
	// request timeout: the KIngress contract forbids one.
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
}

// DefaultConfig returns the defaults documented in the README.
func DefaultConfig() Config {
	return Config{
		ExternalHTTPPort:  8080,
		ExternalHTTPSPort: 8443,
		InternalHTTPPort:  8081,
		InternalHTTPSPort: 8444,
		ListenAddress:     "0.0.0.0",
		ConnectTimeout:    5 * time.Second,
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
	if _, err := netip.ParseAddr(c.ListenAddress); err != nil {
		return fmt.Errorf("listen-address: %q is not an IP address", c.ListenAddress)
	}
	if c.StreamIdleTimeout < 0 || c.IdleTimeout < 0 {
		return fmt.Errorf("timeouts must not be negative")
	}
	// Envoy requires connect_timeout > 0.
	if c.ConnectTimeout <= 0 {
		return fmt.Errorf("connect-timeout: %v must be positive", c.ConnectTimeout)
	}
	return nil
}
