//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// maxConnections is each stack Envoy's --max-connections (main_test.go).
const maxConnections = 1000

// A flood of idle connections, half again what the Envoys hold: those past
// the bound are refused, the overload manager closes idle ones sooner, new
// clients are answered within seconds, and a client already talking
// never fails.
func TestIdleFlood(t *testing.T) {
	backend(t, "flooded", 1)
	host := "flooded.sluice-e2e.example.com"
	createIngress(t, "flooded", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("flooded", 100, nil)))}})
	p := startProber(host, 2)

	n := 3 * maxConnections // two Envoys hold 2 * maxConnections
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", st.External.HTTP, 5*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	start := time.Now()
	steadily(t, 60*time.Second, "new clients answered during the flood", func() error {
		return ok(client(st.External.HTTP), "http://"+host+"/")
	})
	served := time.Since(start)
	open := 0
	for _, c := range flood {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				open++
			}
		}
	}
	t.Logf("%d idle connections: %d still open, new clients answered %.1f s after", n, open, served.Seconds())
	if open > 2*maxConnections {
		t.Errorf("%d idle connections open: more than the Envoys' bound of %d", open, 2*maxConnections)
	}
	if open == n {
		t.Error("no idle connection was shed")
	}
	p.finish(t)
	reliability(t, fmt.Sprintf("%d idle connections against 2 Envoys bounded at %d", n, maxConnections), p,
		fmt.Sprintf("new clients answered %.1f s after; %d shed", served.Seconds(), n-open))
}
