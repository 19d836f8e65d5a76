//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
	"sluice.dev/sluice/internal/status"
)

// TestHeapPressure drives one Envoy through its heap bound on the stack:
// an Envoy with a bound just above what its configuration takes, then
// KIngresses added until it is past 80%, 90% and 100% of it. At each stage
// Sluice's metric and `sluice status` show the Envoy's pressure, requests
// through the gateway (some of them answered by this Envoy: the Envoys
// share the listener port) are all answered 200, and a new KIngress
// becomes Ready with this Envoy holding it: pressure from configuration
// sheds idle connections and large streams, never the gateway's traffic.
func TestHeapPressure(t *testing.T) {
	backend(t, "heap", 1)
	host := "heap.sluice-e2e.example.com"
	createIngress(t, "heap", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("heap", 100, nil)))}})

	// What the configuration takes in a fresh Envoy, measured as the heap
	// monitor does (heap size less free pages), then the bound above it.
	admin, stop, err := st.StartEnvoy(context.Background(), "envoy-heap", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "envoy-heap serving "+host, func() error { return holds(t, "envoy-heap", "heap") })
	used := heapUsed(t, admin)
	stop()
	bound := used * 100 / 75
	admin, stop, err = st.StartEnvoyWith(context.Background(), "envoy-heap", []string{"--max-heap-bytes", fmt.Sprint(bound)}, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	t.Logf("configuration takes %d KiB; envoy-heap's bound: %d KiB", used>>10, bound>>10)

	// Each filler is Serving-shaped (an external host, three cluster-local
	// ones) and routes to the same Service: its routes and scopes, tens
	// of KiB of Envoy's heap.
	fillers := 0
	fill := func(n int) {
		if fillers+n > 2000 {
			t.Fatalf("%d KIngresses added and envoy-heap still at %d of %d KiB", fillers, heapUsed(t, admin)>>10, bound>>10)
		}
		for range n {
			name := fmt.Sprintf("heap-fill-%04d", fillers)
			fillers++
			h := name + ".sluice-e2e.example.com"
			spec := v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(h, httpPath("", split("heap", 100, map[string]string{"Knative-Serving-Revision": name}))),
				rule(v1alpha1.IngressVisibilityClusterLocal, []string{name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"},
					httpPath("", split("heap", 100, nil)))}}
			if _, err := kn.NetworkingV1alpha1().Ingresses(ns).Create(context.Background(), workload.Ingress(ns, name, spec), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { deleteIngress(t, name) })
		}
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: client(st.External.HTTP).Transport.(*http.Transport).DialContext}}
	served := func() int64 { return envoyStats(t, admin)["http.external-http.downstream_rq_completed"] }
	for _, stage := range []struct {
		name    string
		atLeast float64
		actions []string
	}{
		{"below the actions", 0, nil},
		{"idle connections shed", 0.8, []string{"reduce_timeouts"}},
		{"large streams reset", 0.9, []string{"reduce_timeouts", "reset_high_memory_stream"}},
		{"past the bound", 1.0, []string{"reduce_timeouts", "reset_high_memory_stream", "shrink_heap"}},
	} {
		for deadline := time.Now().Add(3 * time.Minute); heapUsed(t, admin)*100 < int64(stage.atLeast*100)*bound; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: envoy-heap at %d of %d KiB after %d KIngresses", stage.name, heapUsed(t, admin)>>10, bound>>10, fillers)
			}
			fill(10)
			time.Sleep(time.Second)
		}
		// Sluice hears it: its metric and `sluice status`.
		var pressure float64
		eventually(t, 30*time.Second, stage.name+": Sluice reports envoy-heap's pressure", func() error {
			pressure = reportedPressure("envoy-heap")
			if pressure < stage.atLeast {
				return fmt.Errorf("sluice_envoy_heap_pressure{envoy=envoy-heap} = %.2f, want >= %.2f", pressure, stage.atLeast)
			}
			var f status.Fleet
			if err := statusJSON(t, &f); err != nil {
				return err
			}
			for _, e := range f.Envoys {
				if e.Node == "envoy-heap" {
					if e.HeapPressure == nil || *e.HeapPressure < stage.atLeast || e.Refusing != "" {
						return fmt.Errorf("sluice status: envoy-heap heap %v refusing %q", e.HeapPressure, e.Refusing)
					}
					return nil
				}
			}
			return fmt.Errorf("sluice status does not list envoy-heap: %+v", f.Envoys)
		})
		actions := envoyActions(t, admin)
		for _, a := range stage.actions {
			if !strings.Contains(actions, a) {
				t.Errorf("%s: %s not in effect (%s)", stage.name, a, actions)
			}
		}
		// What requests get: every one a 200, some from envoy-heap.
		before := served()
		codes := map[int]int{}
		for range 60 {
			resp, err := c.Get("http://" + host + "/")
			if err != nil {
				t.Fatalf("%s: %v", stage.name, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[resp.StatusCode]++
		}
		byHeap := served() - before
		t.Logf("%s: %d KIngresses added, pressure %.2f (Sluice's metric), actions %s; 60 requests: %v, %d by envoy-heap",
			stage.name, fillers, pressure, actions, codes, byHeap)
		if codes[200] != 60 {
			t.Errorf("%s: requests answered %v, want 60 x 200", stage.name, codes)
		}
		if byHeap == 0 {
			t.Errorf("%s: envoy-heap answered none of 60 requests on new connections", stage.name)
		}
		// A new KIngress is Ready, and envoy-heap holds it.
		name := fmt.Sprintf("heap-new-%d", int(stage.atLeast*100))
		createIngress(t, name, v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(name+".sluice-e2e.example.com", httpPath("", split("heap", 100, nil)))}})
		if err := holds(t, "envoy-heap", name); err != nil {
			t.Errorf("%s: %v", stage.name, err)
		}
	}
}

// heapUsed is what Envoy's fixed_heap monitor counts: heap size less free
// pages (admin /memory).
func heapUsed(t *testing.T, admin string) int64 {
	t.Helper()
	var m struct {
		HeapSize     string `json:"heap_size"`
		PageheapFree string `json:"pageheap_free"`
	}
	if err := json.Unmarshal(getBody(t, "http://"+admin+"/memory"), &m); err != nil {
		t.Fatal(err)
	}
	var size, free int64
	fmt.Sscan(m.HeapSize, &size)
	fmt.Sscan(m.PageheapFree, &free)
	return size - free
}

// envoyActions lists the overload actions in effect in an Envoy.
func envoyActions(t *testing.T, admin string) string {
	var out []string
	for k, v := range envoyStats(t, admin) {
		if a, ok := strings.CutPrefix(k, "overload.envoy.overload_actions."); ok && strings.HasSuffix(a, ".scale_percent") && v > 0 {
			out = append(out, strings.TrimSuffix(a, ".scale_percent"))
		}
	}
	return strings.Join(out, ",")
}

// reportedPressure is the highest sluice_envoy_heap_pressure any replica
// exports for node (each hears some of its reports), -1 if none does.
func reportedPressure(node string) float64 {
	best := -1.0
	for i := range st.Options().Controllers {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", st.Options().Ports.SluiceAdmin+i))
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		prefix := fmt.Sprintf("sluice_envoy_heap_pressure{envoy=%q} ", node)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, prefix); ok {
				var f float64
				if _, err := fmt.Sscan(v, &f); err == nil {
					best = max(best, f)
				}
			}
		}
	}
	return best
}

// holds says whether `sluice status` has node serving the ingress.
func holds(t *testing.T, node, ingress string) error {
	var in status.Ingress
	if err := statusJSON(t, &in, ns+"/"+ingress); err != nil {
		return err
	}
	for _, e := range in.Envoys {
		if e.Node == node {
			if !e.Serving {
				return fmt.Errorf("%s does not serve %s: %+v", node, ingress, e)
			}
			return nil
		}
	}
	return fmt.Errorf("sluice status %s does not list %s", ingress, node)
}
