// Command demo brings up the local stack with Sluice and Envoy, deploys
// the release strategies Knative users run (a 90/10 canary, blue/green with
// a 0 % tagged revision, A/B tags by host and header), prints the curl
// commands to try, and tallies where the canary's traffic goes until
// interrupted.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/stack/kubelet"
	"sluice.dev/sluice/e2e/workload"
)

const (
	ns     = "demo"
	domain = "demo.example.com"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Geteuid() != 0 {
		return fmt.Errorf("the local stack needs root (it gives each pod a network namespace); run: sudo make demo")
	}
	root, err := stack.FindRoot()
	if err != nil {
		return err
	}
	step("building the backend images (first run: a minute or two)")
	images, err := kubelet.BuildTestImages(ctx, filepath.Join(root, "bin", "images"))
	if err != nil {
		return err
	}
	backendBin := filepath.Join(root, "bin", "images", workload.BackendImage)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", backendBin, "./e2e/cmd/backend")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the backend: %w", err)
	}
	images[workload.BackendImage] = backendBin

	step("starting etcd, kube-apiserver, kube-controller-manager, the pod runner, Sluice and Envoy")
	st, err := stack.Start(ctx, stack.Options{Images: images, Log: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the stack")
		_ = st.Stop()
	}()
	if !st.SluiceStarted {
		return fmt.Errorf("sluice did not start: %s", st.SluiceSkipReason)
	}
	kn, err := clientset.NewForConfig(st.RESTConfig)
	if err != nil {
		return err
	}
	if err := workload.EnsureNamespace(ctx, st.Client, ns); err != nil {
		return err
	}

	step("deploying revisions as pods with their own network namespaces")
	revisions := []string{"hello-00001", "hello-00002", "shop-blue", "shop-green", "search-a", "search-b"}
	for _, r := range revisions {
		if err := workload.Backend(ctx, st.Client, ns, r, 1); err != nil {
			return err
		}
	}
	for _, r := range revisions {
		if err := workload.WaitEndpoints(ctx, st.Client, ns, r, 1, 2*time.Minute); err != nil {
			return err
		}
	}

	step("creating the KIngresses Knative Serving would generate")
	for name, spec := range map[string]v1alpha1.IngressSpec{
		"hello":  service("hello", nil, []traffic{{"hello-00001", 90}, {"hello-00002", 10}}),
		"shop":   service("shop", []string{"green"}, []traffic{{"shop-blue", 100}, {"shop-green", 0}}),
		"search": service("search", []string{"a", "b"}, []traffic{{"search-a", 50}, {"search-b", 50}}),
	} {
		ing, err := kn.NetworkingV1alpha1().Ingresses(ns).Create(ctx, workload.Ingress(ns, name, spec), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		start := time.Now()
		if _, err := workload.WaitReady(ctx, kn, ns, name, ing.Generation, time.Minute); err != nil {
			return err
		}
		fmt.Printf("    %-7s Ready in %v\n", name, time.Since(start).Round(time.Millisecond))
	}

	gw := st.External.HTTP
	fmt.Printf(`
Sluice is serving. Try:
  curl -H 'Host: hello.%[2]s' http://%[1]s/                     # canary: 90 %% hello-00001, 10 %% hello-00002
  curl -H 'Host: shop.%[2]s' http://%[1]s/                      # blue/green: all blue
  curl -H 'Host: green-shop.%[2]s' http://%[1]s/                # the 0 %% green revision by its tag host
  curl -H 'Host: shop.%[2]s' -H 'Knative-Serving-Tag: green' http://%[1]s/   # ... or by header
  curl -H 'Host: a-search.%[2]s' http://%[1]s/                  # A/B: tag a
  curl -H 'Host: search.%[2]s' -H 'Knative-Serving-Tag: b' http://%[1]s/     # A/B: tag b by header
  export KUBECONFIG=%[3]s; kubectl get kingress -A
  grpcurl -plaintext 127.0.0.1:18000 list                                  # the xDS server

Where 200 requests to hello.%[2]s went (Ctrl-C to stop):
`, gw, domain, st.Kubeconfig)

	c := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		counts := map[string]int{}
		for i := 0; i < 200; i++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+gw+"/", nil)
			req.Host = "hello." + domain
			resp, err := c.Do(req)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				counts["error"]++
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				counts[fmt.Sprintf("status %d", resp.StatusCode)]++
				continue
			}
			counts[resp.Header.Get("X-Backend")]++
		}
		fmt.Printf("  %s  %s\n", time.Now().Format("15:04:05"), tally(counts))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

type traffic struct {
	revision string
	percent  int
}

// service builds the KIngress spec Knative Serving generates for a Service
// with the given traffic and tags. One tag names the last revision (the
// 0 % green of blue/green); with several, tag i names revision i (A/B).
func service(name string, tags []string, tr []traffic) v1alpha1.IngressSpec {
	splits := func(ts []traffic) []v1alpha1.IngressBackendSplit {
		var out []v1alpha1.IngressBackendSplit
		for _, t := range ts {
			out = append(out, v1alpha1.IngressBackendSplit{
				IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: t.revision, ServicePort: intstr.FromInt(80)},
				Percent:        t.percent,
				AppendHeaders:  map[string]string{"Knative-Serving-Revision": t.revision, "Knative-Serving-Namespace": ns},
			})
		}
		return out
	}
	tagTarget := func(i int) traffic {
		if len(tags) == 1 {
			return traffic{tr[len(tr)-1].revision, 100}
		}
		return traffic{tr[i].revision, 100}
	}
	host := name + "." + domain
	var paths []v1alpha1.HTTPIngressPath
	var rules []v1alpha1.IngressRule
	for i, tag := range tags {
		paths = append(paths, v1alpha1.HTTPIngressPath{
			Headers: map[string]v1alpha1.HeaderMatch{"Knative-Serving-Tag": {Exact: tag}},
			Splits:  splits([]traffic{tagTarget(i)}),
		})
		rules = append(rules, v1alpha1.IngressRule{
			Hosts:      []string{tag + "-" + host},
			Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP:       &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: splits([]traffic{tagTarget(i)})}}},
		})
	}
	paths = append(paths, v1alpha1.HTTPIngressPath{Splits: splits(tr)})
	rules = append([]v1alpha1.IngressRule{
		{Hosts: []string{host}, Visibility: v1alpha1.IngressVisibilityExternalIP, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}},
		{Hosts: []string{name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"},
			Visibility: v1alpha1.IngressVisibilityClusterLocal, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: splits(tr)}}}},
	}, rules...)
	return v1alpha1.IngressSpec{Rules: rules, HTTPOption: v1alpha1.HTTPOptionEnabled}
}

func tally(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %3d  %s  ", k, counts[k], strings.Repeat("#", counts[k]/5))
	}
	return b.String()
}
