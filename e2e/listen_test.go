//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// Listen addresses as a list through real Envoy: IPv4 and IPv6 loopback
// both served, then back to one address (IPv6 no longer answers).
func TestDualStack(t *testing.T) {
	backend(t, "dual", 1)
	host := "dual.sluice-e2e.example.com"
	waitReady(t, createIngress(t, "dual", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("dual", 100, nil)))}}))
	v6 := net.JoinHostPort("::1", strconv.Itoa(st.Options().Ports.ExternalHTTP))
	answers := func(addr string) error {
		if err := ok(client(addr), "http://"+host+"/"); err != nil {
			return fmt.Errorf("via %s: %w", addr, err)
		}
		return nil
	}
	if answers(v6) == nil {
		t.Fatalf("%s answers before IPv6 is asked for", v6)
	}
	setConfig(t, map[string]string{"listen-address": "0.0.0.0,::1"})
	steadily(t, 30*time.Second, "IPv4 and IPv6 loopback served", func() error {
		if err := answers(st.External.HTTP); err != nil {
			return err
		}
		return answers(v6)
	})
	setConfig(t, map[string]string{})
	steadily(t, 30*time.Second, "IPv6 gone again, IPv4 served", func() error {
		if answers(v6) == nil {
			return fmt.Errorf("%s still answers", v6)
		}
		return answers(st.External.HTTP)
	})
}
