//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
)

// envoyHasHost asks Envoy i's admin API whether its live route
// configuration knows host.
func envoyHasHost(t *testing.T, i int, host string) bool {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/config_dump?resource=dynamic_route_configs", st.Options().Ports.EnvoyAdmin+i))
	if err != nil {
		t.Fatalf("envoy-%d admin: %v", i, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.Contains(string(b), `"`+host+`"`)
}

// Ready is written only once both Envoys serve the change: at the moment
// Ready flips, both Envoys' live config has the host, and fresh
// connections (spread over both Envoys by the kernel) all get 200.
func TestReadyMeansServedByEveryEnvoy(t *testing.T) {
	backend(t, "rdy", 1)
	host := "rdy.sluice-e2e.example.com"
	ing, err := kn.NetworkingV1alpha1().Ingresses(ns).Create(context.Background(),
		workload.Ingress(ns, "rdy", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("rdy", 100, nil)))}}),
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteIngress(t, "rdy") })
	// Poll tightly so the checks run right after the flip.
	for deadline := time.Now().Add(time.Minute); ; {
		cur, err := kn.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), "rdy", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cur.IsReady() && cur.Generation == ing.Generation {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never Ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < 2; i++ {
		if !envoyHasHost(t, i, host) {
			t.Errorf("Ready, but envoy-%d does not route %s yet", i, host)
		}
	}
	for i := 0; i < 20; i++ {
		c := client(st.External.HTTP) // a new connection each time
		if code, _, _ := do(t, c, "http://"+host+"/", nil); code != http.StatusOK {
			t.Errorf("request %d right after Ready: %d", i, code)
		}
	}
}

// An ingress whose config Envoy rejects is marked with Envoy's error; the
// others, including newer ones, keep being served.
func TestNACKIsolated(t *testing.T) {
	backend(t, "nack", 1)
	good, bad := "good.sluice-e2e.example.com", "bad.sluice-e2e.example.com"
	createIngress(t, "good-before", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(good, httpPath("", split("nack", 100, nil)))}})
	b := workload.Ingress(ns, "bad", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(bad, httpPath("", split("nack", 100, nil)))}})
	b.Annotations[nackAnnotation] = "true"
	if _, err := kn.NetworkingV1alpha1().Ingresses(ns).Create(context.Background(), b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteIngress(t, "bad") })
	eventually(t, 30*time.Second, "bad marked EnvoyRejected", func() error {
		cur, err := kn.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), "bad", metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := cur.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured)
		if c == nil || c.Reason != "EnvoyRejected" {
			return fmt.Errorf("condition %+v", c)
		}
		t.Logf("bad: %s", c.Message)
		if !strings.Contains(c.Message, "rejected route configuration") {
			return fmt.Errorf("message lacks Envoy's error: %s", c.Message)
		}
		return nil
	})
	newer := "newer.sluice-e2e.example.com"
	createIngress(t, "good-after", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(newer, httpPath("", split("nack", 100, nil)))}})
	for _, h := range []string{good, newer} {
		for i := 0; i < 2; i++ {
			if !envoyHasHost(t, i, h) {
				t.Errorf("envoy-%d lost %s after another ingress's NACK", i, h)
			}
		}
		if code, _, _ := get(t, h, "/", nil); code != http.StatusOK {
			t.Errorf("%s: %d after another ingress's NACK", h, code)
		}
	}
	if code, _, _ := get(t, bad, "/", nil); code != http.StatusNotFound {
		t.Errorf("rejected host answered %d, want 404", code)
	}
}

// leader returns the index of the replica holding the Lease.
func leader(t *testing.T) int {
	t.Helper()
	for i := 0; i < 2; i++ {
		if st.Metric(i, "sluice_leader") == 1 {
			return i
		}
	}
	return -1
}

// Killing the leader while traffic flows loses no request, and status
// still converges (the other replica takes the Lease).
func TestLeaderKilledMidTraffic(t *testing.T) {
	backend(t, "ha", 2)
	host := "ha.sluice-e2e.example.com"
	createIngress(t, "ha", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("ha", 100, nil)))}})
	var l int
	eventually(t, 30*time.Second, "a leader", func() error {
		if l = leader(t); l < 0 {
			return fmt.Errorf("no replica leads")
		}
		return nil
	})
	name := fmt.Sprintf("sluice-%d", l)
	p := startProber(host, 2)
	if err := st.Kill(name, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Restart(context.Background(), name); err != nil {
			t.Errorf("restarting %s: %v", name, err)
		}
	})
	// The Envoy of the dead replica reconnects to the other one; then a
	// change made now must turn Ready through the new leader.
	eventually(t, 60*time.Second, "both Envoys on the surviving replica", func() error {
		if n := connectedEnvoys(t, 1-l); n != 2 {
			return fmt.Errorf("sluice-%d has %d Envoys", 1-l, n)
		}
		return nil
	})
	host2 := "ha2.sluice-e2e.example.com"
	createIngress(t, "ha2", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host2, httpPath("", split("ha", 100, nil)))}})
	if code, _, _ := get(t, host2, "/", nil); code != http.StatusOK {
		t.Errorf("new ingress after failover: %d", code)
	}
	if now := leader(t); now == l || now < 0 {
		t.Errorf("leader after killing sluice-%d: %d", l, now)
	}
	time.Sleep(time.Second)
	p.finish(t)
}

// An Envoy killed and restarted gets the whole config again and serves.
func TestEnvoyRestartResyncs(t *testing.T) {
	backend(t, "resync", 1)
	host := "resync.sluice-e2e.example.com"
	createIngress(t, "resync", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("resync", 100, nil)))}})
	if err := st.Kill("envoy-1", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := st.Restart(context.Background(), "envoy-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "envoy-1 routes the host again", func() error {
		if !envoyHasHost(t, 1, host) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	createIngress(t, "resync2", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext("resync2.sluice-e2e.example.com", httpPath("", split("resync", 100, nil)))}})
	if !envoyHasHost(t, 1, "resync2.sluice-e2e.example.com") {
		t.Error("Ready before the restarted Envoy had the new host")
	}
}

// connectedEnvoys reads replica i's count of connected Envoys.
func connectedEnvoys(t *testing.T, i int) int {
	t.Helper()
	return int(st.Metric(i, "sluice_xds_connected_envoys"))
}
