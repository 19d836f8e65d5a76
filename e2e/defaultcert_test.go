//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// default-certificate through real Envoy: a client whose SNI no ingress
// claims gets that certificate on both HTTPS listeners and reaches the
// ingress its Host names; without the key there is nothing to shake hands
// with.
func TestDefaultCertificate(t *testing.T) {
	backend(t, "fallback", 1)
	public, local := "fallback.sluice-e2e.example.com", "fallback.sluice-e2e.svc.cluster.local"
	createIngress(t, "fallback", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		ext(public, httpPath("", split("fallback", 100, nil))),
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{local}, httpPath("", split("fallback", 100, nil))),
	}})
	const certName = "any.example.org" // no ingress's host
	crt := tlsSecret(t, "fallback-cert", certName)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	https := func(addr, host string) error {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
			TLSClientConfig: &tls.Config{ServerName: certName, RootCAs: pool},
		}}
		return ok(c, "https://"+host+"/")
	}
	if err := https(st.External.HTTPS, public); err == nil {
		t.Fatal("a TLS handshake for an unclaimed SNI succeeded before a default certificate was set")
	}
	setConfig(t, map[string]string{"default-certificate": ns + "/fallback-cert"})
	steadily(t, 30*time.Second, "the default certificate on both HTTPS listeners", func() error {
		if err := https(st.External.HTTPS, public); err != nil {
			return fmt.Errorf("external: %w", err)
		}
		if err := https(st.Internal.HTTPS, local); err != nil {
			return fmt.Errorf("internal: %w", err)
		}
		return nil
	})
}
