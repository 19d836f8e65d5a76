//go:build e2e

package knative

import (
	"context"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func apply(t *testing.T, manifest string) {
	t.Helper()
	if err := kc.Apply(context.Background(), manifest); err != nil {
		t.Fatal(err)
	}
}

func traffic(t *testing.T, name string, targets ...Target) {
	t.Helper()
	if err := kc.SetTraffic(context.Background(), ns, name, targets...); err != nil {
		t.Fatal(err)
	}
}

func deleteService(t *testing.T, name string) {
	t.Cleanup(func() {
		_ = kc.Serving.ServingV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// tally sends n requests over 8 connections.
func tally(host string, header map[string]string, n int) map[string]int {
	hc := kc.Client(10 * time.Second)
	var mu sync.Mutex
	out := map[string]int{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			part := Tally(context.Background(), hc, host, header, n/8+boolInt(w < n%8))
			mu.Lock()
			for k, v := range part {
				out[k] += v
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkSplit asserts every request succeeded and each revision's share is
// within five standard deviations of its percent (a false alarm about one
// run in a million).
func checkSplit(t *testing.T, got map[string]int, n int, want map[string]float64) {
	t.Helper()
	sum := 0
	for rev, p := range want {
		k := got[rev]
		sum += k
		mean, sd := float64(n)*p, math.Sqrt(float64(n)*p*(1-p))
		if math.Abs(float64(k)-mean) > 5*sd+0.5 {
			t.Errorf("%s answered %d of %d, want %.0f ± %.0f", rev, k, n, mean, 5*sd)
		}
	}
	if sum != n {
		t.Errorf("only %d of %d requests answered by %v: %v", sum, n, want, got)
	}
	t.Logf("split over %d requests: %v", n, got)
}

// A Knative Service, its host served through the gateway.
func TestHelloService(t *testing.T) {
	deleteService(t, "hello")
	apply(t, ServiceYAML(ns, "hello", "v1", nil))
	host := Host(ns, "hello", "")
	code, r, err := Get(context.Background(), kc.Client(10*time.Second), host, "/", nil)
	if err != nil || code != http.StatusOK || r.Name != "v1" || r.Host != host {
		t.Fatalf("GET %s: %d %+v %v", host, code, r, err)
	}
	// Serving's revision headers, which Sluice adds for the activator, are
	// pruned by the queue-proxy before the container.
	if got := r.Headers["Knative-Serving-Revision"]; len(got) != 0 {
		t.Errorf("the container got Knative-Serving-Revision: %v", got)
	}
}

// A canary: a second revision, the traffic set 50/50 then 90/10.
func TestCanarySplit(t *testing.T) {
	deleteService(t, "canary")
	apply(t, ServiceYAML(ns, "canary", "v1", nil))
	apply(t, ServiceYAML(ns, "canary", "v2", nil))
	host := Host(ns, "canary", "")
	const n = 1000
	traffic(t, "canary", Target{Revision: "canary-v1", Percent: 50}, Target{Revision: "canary-v2", Percent: 50})
	checkSplit(t, tally(host, nil, n), n, map[string]float64{"v1": 0.5, "v2": 0.5})
	traffic(t, "canary", Target{Revision: "canary-v1", Percent: 90}, Target{Revision: "canary-v2", Percent: 10})
	checkSplit(t, tally(host, nil, n), n, map[string]float64{"v1": 0.9, "v2": 0.1})
}

// A 0 % tagged revision, reached by its tag's host and, with
// tag-header-based-routing, by the Knative-Serving-Tag header.
func TestTags(t *testing.T) {
	deleteService(t, "tagged")
	apply(t, ServiceYAML(ns, "tagged", "v1", nil))
	apply(t, ServiceYAML(ns, "tagged", "v2", nil))
	traffic(t, "tagged",
		Target{Revision: "tagged-v1", Percent: 100, Tag: "current"},
		Target{Revision: "tagged-v2", Percent: 0, Tag: "candidate"})
	for _, c := range []struct {
		host   string
		header map[string]string
		want   string
	}{
		{Host(ns, "tagged", ""), nil, "v1"},
		{Host(ns, "tagged", "current"), nil, "v1"},
		{Host(ns, "tagged", "candidate"), nil, "v2"},
		{Host(ns, "tagged", ""), map[string]string{"Knative-Serving-Tag": "candidate"}, "v2"},
		{Host(ns, "tagged", ""), map[string]string{"Knative-Serving-Tag": "current"}, "v1"},
	} {
		got := tally(c.host, c.header, 40)
		if got[c.want] != 40 {
			t.Errorf("%s %v: %v, want all from %s", c.host, c.header, got, c.want)
		}
	}
}

// Blue/green: 100 % moves from the blue tag to the green one while clients
// keep calling; no request fails.
func TestBlueGreenNoFailedRequests(t *testing.T) {
	deleteService(t, "bg")
	apply(t, ServiceYAML(ns, "bg", "blue", nil))
	apply(t, ServiceYAML(ns, "bg", "green", nil))
	traffic(t, "bg", Target{Revision: "bg-blue", Percent: 100, Tag: "blue"}, Target{Revision: "bg-green", Percent: 0, Tag: "green"})
	host := Host(ns, "bg", "")

	p := kc.StartProber(host, 4)
	time.Sleep(time.Second)
	traffic(t, "bg", Target{Revision: "bg-blue", Percent: 0, Tag: "blue"}, Target{Revision: "bg-green", Percent: 100, Tag: "green"})
	time.Sleep(time.Second)
	traffic(t, "bg", Target{Revision: "bg-blue", Percent: 100, Tag: "blue"}, Target{Revision: "bg-green", Percent: 0, Tag: "green"})
	time.Sleep(time.Second)
	seen := p.Stop()
	t.Logf("during two switches: %v", seen)
	if Failed(seen, "blue", "green") > 0 || seen["blue"] == 0 || seen["green"] == 0 {
		t.Errorf("requests during the switches: %v, want no failure and answers from both", seen)
	}
	if got := tally(host, nil, 50); got["blue"] != 50 {
		t.Errorf("after switching back: %v", got)
	}
}

// Scale to zero and back through the real activator: once the revision
// has no pod, a request is held by the activator while a pod starts for
// it, and answered 200 by that pod.
func TestScaleToZeroAndBack(t *testing.T) {
	deleteService(t, "sleepy")
	apply(t, ServiceYAML(ns, "sleepy", "v1", map[string]string{
		"autoscaling.knative.dev/window": "6s", // the shortest: scale down soon after traffic stops
	}))
	if err := kc.WaitScaledToZero(context.Background(), ns, "sleepy-v1", 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	pods := st.Client.CoreV1().Pods(ns)
	sel := metav1.ListOptions{LabelSelector: "serving.knative.dev/revision=sleepy-v1"}
	sent := time.Now()
	code, r, err := Get(context.Background(), kc.Client(time.Minute), Host(ns, "sleepy", ""), "/", nil)
	if err != nil || code != http.StatusOK || r.Name != "v1" {
		t.Fatalf("GET at zero: %d %+v %v", code, r, err)
	}
	t.Logf("answered from zero in %v", time.Since(sent).Round(time.Millisecond))
	l, err := pods.List(context.Background(), sel)
	if err != nil || len(l.Items) == 0 {
		t.Fatalf("no pod after the request: %v", err)
	}
	for _, p := range l.Items {
		if p.CreationTimestamp.Time.Before(sent.Truncate(time.Second)) {
			t.Errorf("pod %s was created at %v, before the request at %v", p.Name, p.CreationTimestamp, sent)
		}
	}
}
