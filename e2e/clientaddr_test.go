//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// Client addresses through real Envoy: by default the backend sees the
// direct peer in X-Forwarded-For; with trusted-hops a proxy's entry is
// believed (X-Envoy-External-Address); with proxy-protocol the external
// listeners take the client from a PROXY header and refuse connections
// without one, while the internal ones are untouched. The addresses in
// the headers are documentation ranges, only ever text.
func TestClientAddress(t *testing.T) {
	backend(t, "caddr", 1)
	host := "caddr.sluice-e2e.example.com"
	waitReady(t, createIngress(t, "caddr", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("caddr", 100, nil)))}}))
	forged := map[string]string{"X-Forwarded-For": "198.51.100.9"}
	headers := func(e echo) (xff, external string) {
		return strings.Join(e.Headers["X-Forwarded-For"], ","), strings.Join(e.Headers["X-Envoy-External-Address"], ",")
	}

	// Envoy appends its peer (its own node address for a loopback peer,
	// as here) and believes no entry a client sent.
	_, e, _ := get(t, host, "/", forged)
	if xff, ext := headers(e); !strings.HasPrefix(xff, "198.51.100.9,") || strings.Count(xff, ",") != 1 || ext != "127.0.0.1" {
		t.Errorf("default: X-Forwarded-For %q (want the peer appended), X-Envoy-External-Address %q (want the peer)", xff, ext)
	}

	setConfig(t, map[string]string{"trusted-hops": "1"})
	steadily(t, 30*time.Second, "the proxy's entry believed", func() error {
		_, e, _ := get(t, host, "/", forged)
		if _, ext := headers(e); ext != "198.51.100.9" {
			return fmt.Errorf("X-Envoy-External-Address %q", ext)
		}
		return nil
	})

	setConfig(t, map[string]string{"proxy-protocol": "true"})
	steadily(t, 30*time.Second, "a connection without a PROXY header refused", func() error {
		resp, err := client(st.External.HTTP).Get("http://" + host + "/")
		if err == nil {
			resp.Body.Close()
			return fmt.Errorf("answered %d", resp.StatusCode)
		}
		return nil
	})
	code, e := proxied(t, st.External.HTTP, host, "203.0.113.7")
	if xff, ext := headers(e); code != http.StatusOK || xff != "203.0.113.7" || ext != "203.0.113.7" {
		t.Errorf("through PROXY: %d, X-Forwarded-For %q, X-Envoy-External-Address %q; want the PROXY source", code, xff, ext)
	}
	if code, _, _ := do(t, client(st.Internal.HTTP), "http://"+host+"/", nil); code != http.StatusOK {
		t.Errorf("the internal listener without a PROXY header: %d", code)
	}

	// Back to the defaults before the next test uses the gateway.
	setConfig(t, map[string]string{})
	steadily(t, 30*time.Second, "plain connections served again", func() error {
		resp, err := client(st.External.HTTP).Get("http://" + host + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

// proxied sends GET / for host on a new connection to addr, preceded by a
// PROXY protocol v1 header naming src as the client.
func proxied(t *testing.T, addr, host, src string) (int, echo) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, dport, _ := net.SplitHostPort(addr)
	fmt.Fprintf(c, "PROXY TCP4 %s 192.0.2.1 40000 %s\r\nGET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", src, dport, host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("through PROXY: %v", err)
	}
	defer resp.Body.Close()
	var e echo
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}
