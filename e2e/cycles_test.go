//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/workload"
)

// cycles is how many create/update/delete cycles TestNoGrowthOverCycles
// runs: $SLUICE_E2E_CYCLES or 1,000 (`make e2e-long` runs 10,000).
func cycles(t *testing.T) int {
	if v := os.Getenv("SLUICE_E2E_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("SLUICE_E2E_CYCLES: %q is not a count", v)
		}
		return n
	}
	return 1000
}

// heapGrowthBound is what a controller's live heap may grow by over any
// number of cycles. What grows by design is the log of changed names each
// delta cache keeps (xds/deltacache.go) for the two types a cycled ingress
// adds names to, route configurations and scopes: at most maxLog (65,536)
// entries each, an entry 24 bytes (and as much again of spare slice
// capacity) plus its name (32 bytes); 2 x 65,536 x 80 B = 10 MiB. The other
// 6 MiB are for spans left partly used after the collection, which
// heap_inuse counts whole (the baseline is about 14 MiB). Measured growth:
// 1.2 MiB after 1,000 cycles, 7.8 MiB after 10,000 (docs/reliability.md).
const heapGrowthBound = 16 << 20

// Ingresses created, updated and deleted over and over leave nothing
// behind in the controllers: goroutines and the live heap after the
// cycles are what they were after a warm-up.
func TestNoGrowthOverCycles(t *testing.T) {
	backend(t, "cycled", 1)
	ings := fastKN(t).NetworkingV1alpha1().Ingresses(ns)
	run := func(from, to int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < to; i += 8 {
					name := fmt.Sprintf("cycle-%d", i)
					spec := v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(name+".sluice-e2e.example.com", httpPath("", split("cycled", 100, nil)))}}
					_, err := ings.Create(context.Background(), workload.Ingress(ns, name, spec), metav1.CreateOptions{})
					if err == nil {
						err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
							ing, err := ings.Get(context.Background(), name, metav1.GetOptions{})
							if err == nil {
								ing.Spec.Rules[0].HTTP.Paths[0].AppendHeaders = map[string]string{"X-Cycle": name}
								_, err = ings.Update(context.Background(), ing, metav1.UpdateOptions{})
							}
							return err
						})
					}
					if err == nil {
						err = ings.Delete(context.Background(), name, metav1.DeleteOptions{})
					}
					if err != nil {
						errs <- fmt.Errorf("%s: %w", name, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	// Each replica's published route configurations: one per ingress and
	// the shared ones. Back at (or, when an earlier test's deletions land
	// meanwhile, below) the count from before the cycles, the cycled
	// ingresses are gone from what that replica publishes.
	routes := func(i int) int64 { return st.Metric(i, `sluice_snapshot_resources{type="routes"}`) }
	var baseline [2]int64
	for i := range baseline {
		baseline[i] = routes(i)
		if baseline[i] < 0 {
			t.Fatalf("sluice-%d's metrics unreadable", i)
		}
	}
	type usage struct{ goroutines, heap int64 }
	measure := func() [2]usage {
		for i := range baseline {
			eventually(t, 2*time.Minute, fmt.Sprintf("sluice-%d back at %d route configurations", i, baseline[i]), func() error {
				n := routes(i)
				if n < 0 || n > baseline[i] {
					return fmt.Errorf("%d", n)
				}
				baseline[i] = n
				return nil
			})
		}
		var u [2]usage
		for i := range u {
			u[i] = usage{st.Metric(i, "go_goroutines"), st.LiveHeap(i)}
			if u[i].goroutines < 0 || u[i].heap < 0 {
				t.Fatalf("sluice-%d's metrics or heap profile unreadable", i)
			}
		}
		return u
	}
	// $SLUICE_E2E_HEAP_DIR: keep both replicas' heap profiles before and
	// after, for go tool pprof -base.
	saveHeaps := func(when string) {
		dir := os.Getenv("SLUICE_E2E_HEAP_DIR")
		for i := 0; dir != "" && i < 2; i++ {
			b := getBody(t, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", st.Options().Ports.SluiceAdmin+i))
			_ = os.WriteFile(fmt.Sprintf("%s/sluice-%d-%s.pprof", dir, i, when), b, 0o644)
		}
	}
	run(0, 200) // warm-up: caches, pools and queues at their working size
	before := measure()
	saveHeaps("before")
	defer saveHeaps("after")
	n := cycles(t)
	start := time.Now()
	run(200, 200+n)
	took := time.Since(start)
	after := measure()
	for i := range before {
		b, a := before[i], after[i]
		t.Logf("reliability: %d create/update/delete cycles in %.0f s | sluice-%d goroutines %d -> %d | live heap %.1f -> %.1f MiB",
			n, took.Seconds(), i, b.goroutines, a.goroutines, float64(b.heap)/(1<<20), float64(a.heap)/(1<<20))
		// A goroutine leaked per cycle would be a thousand; ten allow for
		// those that come and go with the measurement's own HTTP requests.
		if a.goroutines > b.goroutines+10 {
			t.Errorf("sluice-%d: %d goroutines after the cycles, %d before", i, a.goroutines, b.goroutines)
		}
		if a.heap > b.heap+heapGrowthBound {
			t.Errorf("sluice-%d: live heap grew by %.1f MiB, more than the %.0f MiB the delta caches' logs may take",
				i, float64(a.heap-b.heap)/(1<<20), float64(heapGrowthBound)/(1<<20))
		}
	}
}

// fastKN is a KIngress client not held to the tests' 50 requests a second.
func fastKN(t *testing.T) clientset.Interface {
	t.Helper()
	cfg := *st.RESTConfig
	cfg.QPS, cfg.Burst = 300, 600
	c, err := clientset.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
