// Command demo brings up the local stack with real Knative Serving, Sluice
// and Envoy, and walks through a Knative user's day with kubectl: a hello
// Service, a canary (50/50, then 90/10), a 0 % tagged revision reached by
// its tag host and by header, a blue/green switch under load, and scale to
// zero and back through the activator. It prints each command, then the
// commands to try by hand, and tallies the canary until interrupted.
package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sluice.dev/sluice/e2e/knative"
	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
)

const ns = "demo"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
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
	step("building the backend image (first run: a minute or two)")
	images, err := workload.Images(ctx, root)
	if err != nil {
		return err
	}
	step("starting etcd, kube-apiserver, kube-controller-manager, the pod runner, Sluice, Envoy and Knative Serving")
	st, err := stack.Start(ctx, stack.Options{Images: images, Serving: true, UnreadyProbePeriod: time.Second, Log: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the stack")
		_ = st.Stop()
	}()
	kc, err := knative.New(st)
	if err != nil {
		return err
	}
	kc.Log = os.Stdout
	if err := workload.EnsureNamespace(ctx, st.Client, ns); err != nil {
		return err
	}
	hc := kc.Client(time.Minute)
	gw := st.External.HTTP
	curl := func(host string, header map[string]string) error {
		var hs string
		for k, v := range header {
			hs += fmt.Sprintf(" -H '%s: %s'", k, v)
		}
		fmt.Printf("  $ curl -H 'Host: %s'%s http://%s/\n", host, hs, gw)
		start := time.Now()
		code, r, err := knative.Get(ctx, hc, host, "/", header)
		if err != nil {
			return err
		}
		fmt.Printf("    %d from revision %q in %v\n", code, r.Name, time.Since(start).Round(time.Millisecond))
		if code != http.StatusOK {
			return fmt.Errorf("%s answered %d", host, code)
		}
		return nil
	}
	show := func(host string, header map[string]string, n int) {
		fmt.Printf("    %d requests to %s: %s\n", n, host, bars(knative.Tally(ctx, hc, host, header, n)))
	}

	step("a Knative Service")
	if err := kc.Apply(ctx, knative.ServiceYAML(ns, "hello", "v1", nil)); err != nil {
		return err
	}
	hello := knative.Host(ns, "hello", "")
	if err := curl(hello, nil); err != nil {
		return err
	}

	step("a canary: revision v2, traffic 50/50, then 90/10")
	if err := kc.Apply(ctx, knative.ServiceYAML(ns, "hello", "v2", nil)); err != nil {
		return err
	}
	if err := kc.SetTraffic(ctx, ns, "hello", knative.Target{Revision: "hello-v1", Percent: 50}, knative.Target{Revision: "hello-v2", Percent: 50}); err != nil {
		return err
	}
	show(hello, nil, 200)
	if err := kc.SetTraffic(ctx, ns, "hello", knative.Target{Revision: "hello-v1", Percent: 90}, knative.Target{Revision: "hello-v2", Percent: 10}); err != nil {
		return err
	}
	show(hello, nil, 200)

	step("tags: a 0 %% revision reached by its tag host, and by header with tag-header-based-routing")
	if _, err := kc.Run(ctx, "", "patch", "configmap", "config-features", "-n", stack.SystemNS, "--type=merge",
		"-p", `{"data":{"tag-header-based-routing":"enabled"}}`); err != nil {
		return err
	}
	if err := kc.SetTraffic(ctx, ns, "hello",
		knative.Target{Revision: "hello-v1", Percent: 90}, knative.Target{Revision: "hello-v2", Percent: 10},
		knative.Target{Revision: "hello-v2", Percent: 0, Tag: "candidate"}); err != nil {
		return err
	}
	if err := curl(knative.Host(ns, "hello", "candidate"), nil); err != nil {
		return err
	}
	if err := curl(hello, map[string]string{"Knative-Serving-Tag": "candidate"}); err != nil {
		return err
	}

	step("blue/green: 100 %% from blue to green while 4 clients keep calling")
	if err := kc.Apply(ctx, knative.ServiceYAML(ns, "shop", "blue", nil)); err != nil {
		return err
	}
	if err := kc.Apply(ctx, knative.ServiceYAML(ns, "shop", "green", nil)); err != nil {
		return err
	}
	if err := kc.SetTraffic(ctx, ns, "shop", knative.Target{Revision: "shop-blue", Percent: 100, Tag: "blue"}, knative.Target{Revision: "shop-green", Percent: 0, Tag: "green"}); err != nil {
		return err
	}
	shop := knative.Host(ns, "shop", "")
	p := kc.StartProber(shop, 4)
	time.Sleep(time.Second)
	err = kc.SetTraffic(ctx, ns, "shop", knative.Target{Revision: "shop-blue", Percent: 0, Tag: "blue"}, knative.Target{Revision: "shop-green", Percent: 100, Tag: "green"})
	time.Sleep(time.Second)
	seen := p.Stop()
	if err != nil {
		return err
	}
	fmt.Printf("    during the switch: %s; failed: %d\n", bars(seen), knative.Failed(seen, "blue", "green"))

	step("scale to zero and back through the activator")
	if err := kc.Apply(ctx, knative.ServiceYAML(ns, "sleepy", "v1", map[string]string{"autoscaling.knative.dev/window": "6s"})); err != nil {
		return err
	}
	fmt.Println("    waiting for the revision to have no pod (a stable window of 6s, then Serving's 30s grace period)")
	fmt.Printf("    (to watch: kubectl get pods -n %s -l serving.knative.dev/revision=sleepy-v1 -w)\n", ns)
	if err := kc.WaitScaledToZero(ctx, ns, "sleepy-v1", 3*time.Minute); err != nil {
		return err
	}
	fmt.Println("    no pod left; calling it:")
	if err := curl(knative.Host(ns, "sleepy", ""), nil); err != nil {
		return err
	}
	pods, err := st.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/revision=sleepy-v1"})
	if err == nil {
		fmt.Printf("    pods of sleepy-v1 now: %d\n", len(pods.Items))
	}

	fmt.Printf(`
Knative Serving runs with Sluice. Try:
  export KUBECONFIG=%[3]s PATH=%[4]s:$PATH
  kubectl get ksvc,kingress -n %[2]s
  curl -H 'Host: %[5]s' http://%[1]s/                                   # 90 %% v1, 10 %% v2
  curl -H 'Host: %[6]s' http://%[1]s/                         # the 0 %% candidate by its tag host
  curl -H 'Host: %[5]s' -H 'Knative-Serving-Tag: candidate' http://%[1]s/   # ... or by header
  kubectl patch ksvc hello -n %[2]s --type=merge -p '{"spec":{"traffic":[{"revisionName":"hello-v2","percent":100}]}}'
  grpcurl -plaintext 127.0.0.1:18000 list                                  # the xDS server

Where 200 requests to %[5]s went (Ctrl-C to stop):
`, gw, ns, st.Kubeconfig, st.Options().BinDir, hello, knative.Host(ns, "hello", "candidate"))
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		counts := knative.Tally(ctx, hc, hello, nil, 200)
		if ctx.Err() != nil {
			return nil
		}
		fmt.Printf("  %s  %s\n", time.Now().Format("15:04:05"), bars(counts))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// bars renders a tally: each revision with its count and a bar of its
// share (40 marks for all of it).
func bars(counts map[string]int) string {
	total := 0
	for _, n := range counts {
		total += n
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(&b, "%s: %4d %-40s ", k, counts[k], strings.Repeat("#", counts[k]*40/max(total, 1)))
	}
	return strings.TrimRight(b.String(), " ")
}
