//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// prober sends requests without pause from a few clients until stopped,
// counting every answer that is not 200. It has no request cap: a prober
// that stopped early would leave the end of a test unprobed.
type prober struct {
	ok, bad atomic.Int64
	mu      sync.Mutex
	errs    []string       // the first ten failures
	last    string         // and the last, to tell a burst from a standing fault
	failed  map[string]int // failures by host
	byName  map[string]int
	stop    chan struct{}
	done    sync.WaitGroup
}

func startProber(host string, workers int) *prober {
	return startProberOn([]string{host}, workers)
}

// startProberOn is startProber taking turns over several hosts.
func startProberOn(hosts []string, workers int) *prober {
	p := &prober{stop: make(chan struct{}), byName: map[string]int{}, failed: map[string]int{}}
	for w := 0; w < workers; w++ {
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			c := client(st.External.HTTP)
			for n := w; ; n++ {
				host := hosts[n%len(hosts)]
				select {
				case <-p.stop:
					return
				default:
				}
				resp, err := c.Get("http://" + host + "/")
				if err != nil {
					p.fail(host, err.Error())
					continue
				}
				name := resp.Header.Get("X-Backend")
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					// Envoy's own answers say why in the body.
					p.fail(host, fmt.Sprintf("status %d via %q: %q", resp.StatusCode, resp.Header.Get("server"), body))
					continue
				}
				p.ok.Add(1)
				p.mu.Lock()
				p.byName[name]++
				p.mu.Unlock()
			}
		}()
	}
	return p
}

func (p *prober) fail(host, msg string) {
	p.bad.Add(1)
	msg = time.Now().Format("15:04:05.000") + " " + host + ": " + msg
	p.mu.Lock()
	if len(p.errs) < 10 {
		p.errs = append(p.errs, msg)
	}
	p.last = msg
	p.failed[host]++
	p.mu.Unlock()
}

func (p *prober) finish(t *testing.T) {
	t.Helper()
	close(p.stop)
	p.done.Wait()
	t.Logf("prober: %d ok, %d failed, by backend %v", p.ok.Load(), p.bad.Load(), p.byName)
	if p.bad.Load() != 0 {
		t.Errorf("%d requests failed while the config changed, by host %v; first: %v; last: %s", p.bad.Load(), p.failed, p.errs, p.last)
	}
	if p.ok.Load() < 100 {
		t.Errorf("only %d requests succeeded: the prober did not really run", p.ok.Load())
	}
}

// Twenty updates of the ingress, with its backends changing under it,
// while a client sends requests without pause: not one may fail.
func TestContinuousTrafficThroughUpdates(t *testing.T) {
	backend(t, "cont-a", 2)
	backend(t, "cont-b", 1)
	host := "cont.sluice-e2e.example.com"
	spec := func(i int) v1alpha1.IngressSpec {
		a := 100 - (i*10)%100
		p := httpPath("", split("cont-a", a, map[string]string{"X-Gen": fmt.Sprint(i)}), split("cont-b", 100-a, nil))
		if i%3 == 0 {
			p.AppendHeaders = map[string]string{"X-Update": fmt.Sprint(i)}
		}
		return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, p)}}
	}
	createIngress(t, "cont", spec(0))
	p := startProber(host, 4)
	for i := 1; i <= 20; i++ {
		updateIngress(t, "cont", spec(i))
		switch i {
		case 5: // scale cont-b up
			pod(t, "cont-b-1", "cont-b", "sluice-backend", map[string]string{"NAME": "cont-b"})
		case 10: // replace a cont-a pod: the old one terminates gracefully
			pod(t, "cont-a-2", "cont-a", "sluice-backend", map[string]string{"NAME": "cont-a"})
			waitEndpoints(t, "cont-a", 3)
			if err := kube.CoreV1().Pods(ns).Delete(context.Background(), "cont-a-0", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitEndpoints(t, "cont-a", 2)
	time.Sleep(time.Second)
	p.finish(t)
}

// Scale to zero and back: the Service's endpoints are swapped to a
// stand-in activator and back, as Knative's serverless service does, and
// no request fails.
func TestScaleToZeroAndBack(t *testing.T) {
	backend(t, "s2z-rev", 1)
	backend(t, "activator", 1)
	// The revision's public Service has no selector: its endpoints are
	// managed by hand (by Knative's SKS, here by the test).
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "s2z", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if _, err := kube.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Services(ns).Delete(context.Background(), "s2z", metav1.DeleteOptions{}) })
	point := func(target string) {
		t.Helper()
		ip := podIP(t, target+"-0")
		port, name, ready := int32(8080), "http", true
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "s2z-manual", Namespace: ns, Labels: map[string]string{
				discoveryv1.LabelServiceName: "s2z", discoveryv1.LabelManagedBy: "sluice-e2e"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		}
		cur, err := kube.DiscoveryV1().EndpointSlices(ns).Get(context.Background(), sl.Name, metav1.GetOptions{})
		if err == nil {
			sl.ResourceVersion = cur.ResourceVersion
			_, err = kube.DiscoveryV1().EndpointSlices(ns).Update(context.Background(), sl, metav1.UpdateOptions{})
		} else {
			_, err = kube.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), sl, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	point("s2z-rev")
	t.Cleanup(func() {
		_ = kube.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), "s2z-manual", metav1.DeleteOptions{})
	})
	host := "s2z.sluice-e2e.example.com"
	createIngress(t, "s2z", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("s2z", 100, nil)))}})

	p := startProber(host, 2)
	wantServer := func(name string) {
		t.Helper()
		eventually(t, 10*time.Second, "traffic at "+name, func() error {
			if _, e, _ := get(t, host, "/", nil); e.Name != name {
				return fmt.Errorf("reached %q", e.Name)
			}
			return nil
		})
	}
	time.Sleep(500 * time.Millisecond)
	point("activator") // scaled to zero: the activator takes the traffic
	wantServer("activator")
	time.Sleep(500 * time.Millisecond)
	point("s2z-rev") // scaled back up
	wantServer("s2z-rev")
	time.Sleep(500 * time.Millisecond)
	p.finish(t)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byName["activator"] == 0 || p.byName["s2z-rev"] == 0 {
		t.Errorf("traffic did not move: %v", p.byName)
	}
}

func podIP(t *testing.T, name string) string {
	t.Helper()
	p, err := kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || p.Status.PodIP == "" {
		t.Fatalf("pod %s has no IP: %v", name, err)
	}
	return p.Status.PodIP
}

// A thousand updates at 50 a second (each moving the split and a header)
// while clients send requests without pause: not one may fail.
func TestSteadyClientThrough1000Updates(t *testing.T) {
	backend(t, "steady-a", 1)
	backend(t, "steady-b", 1)
	host := "steady.sluice-e2e.example.com"
	spec := func(i int) v1alpha1.IngressSpec {
		a := 100 - i%101
		p := httpPath("", split("steady-a", a, map[string]string{"X-Gen": fmt.Sprint(i)}), split("steady-b", 100-a, nil))
		return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, p)}}
	}
	waitReady(t, createIngress(t, "steady", spec(0)))
	p := startProber(host, 2)
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var ing *v1alpha1.Ingress
	for i := 1; i <= 1000; i++ {
		<-tick.C
		// A merge patch of the spec: no conflict with the status writes.
		patch, err := json.Marshal(map[string]any{"spec": spec(i)})
		if err != nil {
			t.Fatal(err)
		}
		if ing, err = kn.NetworkingV1alpha1().Ingresses(ns).Patch(context.Background(), "steady", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	took := time.Since(start)
	waitReady(t, ing)
	t.Logf("1,000 updates in %s (%.0f/s)", took.Round(time.Millisecond), 1000/took.Seconds())
	p.finish(t)
}
