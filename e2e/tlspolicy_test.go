//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// TLS policy and the Server header through real Envoy: a minimum version,
// a maximum with one cipher suite, ALPN h2, a refused suite named in the
// controller's log with the last good policy kept, and the Server header
// Envoy writes.
func TestTLSPolicy(t *testing.T) {
	backend(t, "tlspol", 1)
	host := "tlspol.sluice-e2e.example.com"
	crt := tlsSecret(t, "tlspol-cert", host)
	waitReady(t, createIngress(t, "tlspol", v1alpha1.IngressSpec{
		TLS:   []v1alpha1.IngressTLS{{Hosts: []string{host}, SecretName: "tlspol-cert", SecretNamespace: ns}},
		Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("tlspol", 100, nil)))},
	}))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	// handshake connects with the given client settings and returns the
	// connection state, or the handshake's error.
	handshake := func(min, max uint16, suites []uint16) (tls.ConnectionState, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", st.External.HTTPS, &tls.Config{ServerName: host, RootCAs: pool,
			MinVersion: min, MaxVersion: max, CipherSuites: suites, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.ConnectionState(), nil
	}
	expect := func(what string, ok bool, min, max uint16, suites ...uint16) {
		t.Helper()
		steadily(t, 30*time.Second, what, func() error {
			_, err := handshake(min, max, suites)
			if ok && err != nil {
				return fmt.Errorf("handshake failed: %v", err)
			}
			if !ok && err == nil {
				return fmt.Errorf("handshake succeeded")
			}
			return nil
		})
	}
	const (
		aes128 = tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
		aes256 = tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
	)

	// Envoy's defaults: TLS 1.2 and 1.3, ALPN h2.
	expect("TLS 1.2 by default", true, tls.VersionTLS12, tls.VersionTLS12)
	if cs, err := handshake(tls.VersionTLS13, tls.VersionTLS13, nil); err != nil || cs.NegotiatedProtocol != "h2" {
		t.Fatalf("TLS 1.3 with ALPN: %v, protocol %q", err, cs.NegotiatedProtocol)
	}

	setConfig(t, map[string]string{"tls-min-version": "1.3"})
	expect("TLS 1.2 refused with tls-min-version 1.3", false, tls.VersionTLS12, tls.VersionTLS12)
	expect("TLS 1.3 still served", true, tls.VersionTLS13, tls.VersionTLS13)

	setConfig(t, map[string]string{"tls-max-version": "1.2", "tls-cipher-suites": "ECDHE-ECDSA-AES256-GCM-SHA384"})
	expect("TLS 1.2 with the one suite", true, tls.VersionTLS12, tls.VersionTLS12, aes256)
	expect("another suite refused", false, tls.VersionTLS12, tls.VersionTLS12, aes128)
	expect("TLS 1.3 refused with tls-max-version 1.2", false, tls.VersionTLS13, tls.VersionTLS13)

	// A suite BoringSSL cannot configure: refused by name, policy kept.
	setConfig(t, map[string]string{"tls-cipher-suites": "TLS_AES_128_GCM_SHA256"})
	eventually(t, 20*time.Second, "the controller refusing tls-cipher-suites", func() error {
		if !strings.Contains(controllerLogs(t), `tls-cipher-suites: \"TLS_AES_128_GCM_SHA256\" is not a TLS 1.2 cipher suite`) {
			return fmt.Errorf("no error naming the key in the controller's log")
		}
		return nil
	})
	for i := 0; i < 6; i++ {
		if _, err := handshake(tls.VersionTLS12, tls.VersionTLS12, []uint16{aes128}); err == nil {
			t.Fatal("after a refused config, the last good policy is gone: another suite is served")
		}
		if _, err := handshake(tls.VersionTLS12, tls.VersionTLS12, []uint16{aes256}); err != nil {
			t.Fatalf("after a refused config, the one suite is refused: %v", err)
		}
	}

	// The Server header: Envoy's name for itself, or ours.
	server := func() string {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, st.External.HTTPS)
			},
			TLSClientConfig: &tls.Config{ServerName: host, RootCAs: pool},
		}}
		resp, err := c.Get("https://" + host + "/")
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		return resp.Header.Get("Server")
	}
	setConfig(t, map[string]string{"server-name": "sluice-e2e"})
	steadily(t, 30*time.Second, "Server: sluice-e2e", func() error {
		if s := server(); s != "sluice-e2e" {
			return fmt.Errorf("Server %q", s)
		}
		return nil
	})
	// Back to the defaults before the next test uses the gateway.
	setConfig(t, map[string]string{})
	expect("Envoy's defaults again", true, tls.VersionTLS12, tls.VersionTLS12, aes128)
}
