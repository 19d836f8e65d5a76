//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
)

// Faults with a client sending requests all along (not one may fail), each
// printing a "reliability:" line that docs/reliability.md's table holds.

// reliability prints one row of docs/reliability.md.
func reliability(t *testing.T, fault string, p *prober, recovery string) {
	t.Helper()
	t.Logf("reliability: %s | %d requests | %d failed | %s", fault, p.ok.Load()+p.bad.Load(), p.bad.Load(), recovery)
}

// envDuration is $name as a Go duration, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// The API server and etcd go away for a minute, just after an ingress was
// changed: the Envoys keep serving, the controllers neither crash nor
// restart, and once the API server is back the change is served and its
// status written, with nobody restarted.
func TestAPIServerOutage(t *testing.T) {
	backend(t, "outage", 2)
	host, host2 := "outage.sluice-e2e.example.com", "outage2.sluice-e2e.example.com"
	spec := func(hosts ...string) v1alpha1.IngressSpec {
		var rules []v1alpha1.IngressRule
		for _, h := range hosts {
			rules = append(rules, ext(h, httpPath("", split("outage", 100, nil))))
		}
		return v1alpha1.IngressSpec{Rules: rules}
	}
	createIngress(t, "outage", spec(host))
	pids := []int{st.Pid("sluice-0"), st.Pid("sluice-1")}
	alive := func() error {
		for i, pid := range pids {
			if now := st.Pid(fmt.Sprintf("sluice-%d", i)); now != pid {
				return fmt.Errorf("sluice-%d is pid %d, was %d: it died or restarted", i, now, pid)
			}
		}
		return nil
	}
	p := startProber(host, 2)

	// The controllers are paused while the change is made and the API
	// server goes, so that its status cannot be written before the outage.
	signalAll(t, syscall.SIGSTOP, "sluice-0", "sluice-1")
	changed := changeIngress(t, "outage", func(s *v1alpha1.IngressSpec) { *s = spec(host, host2) })
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := st.Halt(name); err != nil {
			t.Fatal(err)
		}
	}
	signalAll(t, syscall.SIGCONT, "sluice-0", "sluice-1")
	down := envDuration(t, "SLUICE_E2E_OUTAGE", time.Minute)
	t.Logf("API server and etcd down for %v", down)
	for end := time.Now().Add(down); time.Now().Before(end); time.Sleep(5 * time.Second) {
		if err := alive(); err != nil {
			t.Error(err)
			break
		}
	}
	back := time.Now()
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if err := st.Restart(context.Background(), name); err != nil {
			t.Fatalf("%s back: %v", name, err)
		}
	}
	t.Logf("etcd and the API server ready again in %.1f s", time.Since(back).Seconds())
	if _, err := workload.WaitReady(context.Background(), kn, ns, "outage", changed.Generation, 2*time.Minute); err != nil {
		t.Fatalf("the change made before the outage: %v", err)
	}
	ready := time.Since(back)
	steadily(t, 10*time.Second, "the new host served", func() error { return ok(client(st.External.HTTP), "http://"+host2+"/") })
	// Something new after the outage: the controllers' informers come back
	// each on its own backoff (client-go's, up to 30 s), so a new Service's
	// endpoints may reach Envoy later than its ingress does. The stack's
	// own pod runner and kube-controller-manager relist on the same backoff,
	// jittered up to twice that (the pod runner saw a pod created 50 s
	// late, and a CI run found no endpoints after 90 s): their time is not
	// Sluice's, so the endpoints get three minutes to be in the API, and
	// what is measured starts there.
	service(t, "after-outage", workload.HTTPPort())
	pod(t, "after-outage-0", "after-outage", workload.BackendImage, map[string]string{"NAME": "after-outage"})
	if err := workload.WaitEndpoints(context.Background(), kube, ns, "after-outage", 1, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	withEndpoints := time.Now()
	host3 := "after-outage.sluice-e2e.example.com"
	createIngress(t, "after-outage", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host3, httpPath("", split("after-outage", 100, nil)))}})
	steadily(t, 60*time.Second, "a new Service served", func() error { return ok(client(st.External.HTTP), "http://"+host3+"/") })
	fresh := time.Since(withEndpoints)
	if err := alive(); err != nil {
		t.Error(err)
	}
	p.finish(t)
	reliability(t, fmt.Sprintf("API server and etcd down %v, a change pending", down), p,
		fmt.Sprintf("change Ready %.1f s after etcd and the API server were started; a new Service served %.1f s after its endpoints were in the API (%.0f s after the restart)",
			ready.Seconds(), fresh.Seconds(), time.Since(back).Seconds()))
}

// Every controller replica killed at once and started again: the Envoys
// serve all along, and a controller that starts serves nothing before it
// knows every ingress (a partial config would lose some of the hosts the
// client takes turns over).
func TestAllControllersKilled(t *testing.T) {
	backend(t, "orphan", 1)
	var hosts []string
	for i := 0; i < 20; i++ {
		h := fmt.Sprintf("orphan-%d.sluice-e2e.example.com", i)
		hosts = append(hosts, h)
		createIngress(t, fmt.Sprintf("orphan-%d", i), v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(h, httpPath("", split("orphan", 100, nil)))}})
	}
	p := startProberOn(hosts, 4)
	for _, name := range []string{"sluice-0", "sluice-1"} {
		if err := st.Kill(name, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Second) // Envoys on their own
	start := time.Now()
	restartAll(t, "sluice-0", "sluice-1")
	eventually(t, 60*time.Second, "both Envoys connected again", func() error {
		if n := connectedEnvoys(t, 0) + connectedEnvoys(t, 1); n != 2 {
			return fmt.Errorf("%d Envoys connected", n)
		}
		return nil
	})
	took := time.Since(start)
	createIngress(t, "orphan-late", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext("orphan-late.sluice-e2e.example.com", httpPath("", split("orphan", 100, nil)))}})
	p.finish(t)
	reliability(t, "every controller killed for 10 s, 20 ingresses", p, fmt.Sprintf("Envoys reconnected %.1f s after the restart", took.Seconds()))
}

// signalAll sends sig to processes of the stack.
func signalAll(t *testing.T, sig syscall.Signal, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := st.Kill(name, sig); err != nil {
			t.Fatal(err)
		}
	}
}

// changeIngress applies edit to the ingress's spec, again on a conflict
// (the controller writes status meanwhile), and returns what was stored.
func changeIngress(t *testing.T, name string, edit func(*v1alpha1.IngressSpec)) *v1alpha1.Ingress {
	t.Helper()
	ings := kn.NetworkingV1alpha1().Ingresses(ns)
	var got *v1alpha1.Ingress
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := ings.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		edit(&cur.Spec)
		got, err = ings.Update(context.Background(), cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("changing %s: %v", name, err)
	}
	return got
}

// restartAll restarts processes of the stack at once.
func restartAll(t *testing.T, names ...string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := st.Restart(context.Background(), name); err != nil {
				t.Errorf("restarting %s: %v", name, err)
			}
		}()
	}
	wg.Wait()
}

// An Envoy that starts while every controller is down gets its config once
// they are back, and then serves (it shares the listener ports, so the
// client reaches it too).
func TestEnvoyStartsWithoutControllers(t *testing.T) {
	backend(t, "early", 1)
	host := "early.sluice-e2e.example.com"
	createIngress(t, "early", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("early", 100, nil)))}})
	p := startProber(host, 2)
	for _, name := range []string{"sluice-0", "sluice-1"} {
		if err := st.Kill(name, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	type started struct {
		stop func()
		err  error
		at   time.Time
	}
	ch := make(chan started, 1)
	go func() {
		_, stop, err := st.StartEnvoy(context.Background(), "envoy-early", 0, 1)
		ch <- started{stop, err, time.Now()}
	}()
	select {
	case s := <-ch:
		t.Fatalf("an Envoy was ready with no controller to configure it (%v)", s.err)
	case <-time.After(10 * time.Second):
	}
	back := time.Now()
	restartAll(t, "sluice-0", "sluice-1")
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	t.Cleanup(s.stop)
	took := s.at.Sub(back)
	time.Sleep(2 * time.Second) // traffic through all three
	p.finish(t)
	reliability(t, "an Envoy started while every controller was down for 10 s", p,
		fmt.Sprintf("that Envoy ready %.1f s after the controllers", took.Seconds()))
}

// Two replicas restarted one after the other (SIGTERM, as a rolling update
// does) while five ingresses take 1,000 updates between them, 50 a second:
// no request fails and every last update is served.
func TestRollingRestartUnderUpdates(t *testing.T) {
	backend(t, "roll-a", 2)
	backend(t, "roll-b", 1)
	const ingresses, updates = 5, 1000
	host := func(k int) string { return fmt.Sprintf("roll-%d.sluice-e2e.example.com", k) }
	spec := func(k, i int) v1alpha1.IngressSpec {
		a := 100 - (i*10)%100
		gen := map[string]string{"X-Gen": fmt.Sprint(i)}
		return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host(k),
			httpPath("", split("roll-a", a, gen), split("roll-b", 100-a, gen)))}}
	}
	var hosts []string
	for k := 0; k < ingresses; k++ {
		createIngress(t, fmt.Sprintf("roll-%d", k), spec(k, 0))
		hosts = append(hosts, host(k))
	}
	p := startProberOn(hosts, 4)

	// One writer per ingress, each at its share of 50 a second.
	last := make([]*v1alpha1.Ingress, ingresses)
	errs := make(chan error, ingresses)
	ings := fastKN(t).NetworkingV1alpha1().Ingresses(ns)
	start := time.Now()
	for k := 0; k < ingresses; k++ {
		go func() {
			tick := time.NewTicker(time.Second * ingresses / 50)
			defer tick.Stop()
			name := fmt.Sprintf("roll-%d", k)
			for i := 1; i <= updates/ingresses; i++ {
				<-tick.C
				err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
					cur, err := ings.Get(context.Background(), name, metav1.GetOptions{})
					if err == nil {
						cur.Spec = spec(k, i)
						last[k], err = ings.Update(context.Background(), cur, metav1.UpdateOptions{})
					}
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("%s update %d: %w", name, i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	var took []string
	for _, name := range []string{"sluice-0", "sluice-1"} {
		time.Sleep(3 * time.Second)
		t0 := time.Now()
		if err := st.Restart(context.Background(), name); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "both Envoys connected", func() error {
			if n := connectedEnvoys(t, 0) + connectedEnvoys(t, 1); n != 2 {
				return fmt.Errorf("%d Envoys connected", n)
			}
			return nil
		})
		took = append(took, fmt.Sprintf("%s %.1f s", name, time.Since(t0).Seconds()))
	}
	for k := 0; k < ingresses; k++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	sent := time.Since(start)
	t.Logf("%d updates in %v", updates, sent.Round(time.Millisecond))
	for k := 0; k < ingresses; k++ {
		waitReady(t, last[k])
		_, e, _ := get(t, host(k), "/", nil)
		if g := e.Headers["X-Gen"]; len(g) != 1 || g[0] != fmt.Sprint(updates/ingresses) {
			t.Errorf("%s: X-Gen %v after the last update, want %d", host(k), g, updates/ingresses)
		}
	}
	p.finish(t)
	reliability(t, fmt.Sprintf("rolling restart of 2 replicas under %d updates (%.0f/s)", updates, updates/sent.Seconds()), p,
		"restart to both Envoys connected: "+fmt.Sprint(took))
}
