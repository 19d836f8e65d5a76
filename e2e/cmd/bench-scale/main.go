// Command bench-scale measures what one KIngress change costs with N
// KIngresses present, on the local stack with real Envoys, for one or
// more sluice builds on the same objects in the same run:
//
//	go run ./e2e/cmd/bench-scale -n 1000 -bin before=/tmp/sluice-old -bin after=bin/sluice
//
// The N KIngresses are shaped as Knative Serving makes them (a ClusterLocal
// rule with three hosts, an ExternalIP rule, a 90/10 split over two
// revision Services with appendHeaders) in 100 namespaces. Revision
// Services are headless and have no endpoints, so a served host gets
// Envoy's own 503 and an unknown one 404: no request leaves Envoy.
//
// Per build it prints and writes to e2e/results/:
//   - P1: from a create (or an update adding a host) to every Envoy serving
//     it: 16 requests in a row on fresh connections answered 503 (the
//     Envoys share the listener port, so each request lands on either);
//   - P2: bytes each Envoy received from xDS per change (its
//     cluster.sluice-xds.upstream_cx_rx_bytes_total);
//   - P3: cold start, controller and Envoys new, to a sample of hosts served;
//   - P4: controller RSS once settled; P5: Envoy heap per KIngress.
//
// With -dataplane D it measures requests through one Envoy instead
// (dataplane.go); with -variants D, Envoy's instructions per request for
// variants of the listener's configuration (variants.go).
//
// Figures are printed, never asserted: the machine is shared and noisy.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/stack"
)

type binFlag []string

func (b *binFlag) String() string     { return strings.Join(*b, ",") }
func (b *binFlag) Set(v string) error { *b = append(*b, v); return nil }

type run struct {
	Name, Bin       string
	N               int
	CreateMs        []float64 `json:"create_ms"`
	UpdateMs        []float64 `json:"update_ms"`
	BytesPerChange  []float64 `json:"bytes_per_change_per_envoy"`
	ColdStartMs     float64   `json:"cold_start_ms"`
	ControllerRSS   int64     `json:"controller_rss_bytes"`
	ControllerCPUms float64   `json:"controller_cpu_ms_cold_start"`
	EnvoyHeap       []int64   `json:"envoy_heap_bytes"`
	ControllerHeap  int64     `json:"controller_heap_inuse_bytes"`
	Memory          memory    `json:"memory"`
	Env             []string  `json:"env,omitempty"`
	// Readings that could not be taken: their fields hold -1.
	NotMeasured []string `json:"not_measured,omitempty"`
}

const (
	namespaces = 100
	class      = "sluice.ingress.networking.knative.dev"
	need       = 16 // requests in a row answered by a served route
)

func main() {
	n := flag.Int("n", 1000, "KIngresses present")
	creates := flag.Int("creates", 30, "creates measured")
	updates := flag.Int("updates", 10, "updates measured")
	sample := flag.Int("sample", 50, "hosts probed for the cold start")
	prime := flag.Bool("prime", true, "before measuring, run the first build until every KIngress is Ready, so no run pays for writing every status")
	profile := flag.Duration("profile", 0, "if set, save CPU profiles of the controller's first this long and of the changes to e2e/results/")
	var dp dpOptions
	flag.DurationVar(&dp.Round, "dataplane", 0, "if set, measure the data plane instead of changes (dataplane.go): rounds this long")
	flag.IntVar(&dp.Rounds, "rounds", 6, "data-plane rounds per build")
	flag.IntVar(&dp.Clients, "clients", 16, "data-plane keep-alive clients")
	limits := flag.String("limits", "chart", "memory limits of the controller and Envoys: chart (the chart's default resources.limits, and GOMEMLIMIT as the chart sets it) or none")
	fleet := flag.Int("fleet", 0, "if set, measure what each Envoy costs with this many simulated Envoys beside the real ones (fleet.go)")
	window := flag.Duration("variants", 0, "if set, count Envoy's instructions per request for variants of the listener's configuration instead, each this long (variants.go; no stack)")
	var bins binFlag
	flag.Var(&bins, "bin", "name=path[,VAR=value...] of a sluice build and its environment (repeat to compare; default current=bin/sluice)")
	flag.Parse()
	if len(bins) == 0 {
		bins = binFlag{"current=bin/sluice"}
	}
	if *window > 0 {
		root, err := stack.FindRoot()
		check(err)
		check(runVariants(root, bins, *n, *window))
		return
	}
	if *window > 0 {
		root, err := stack.FindRoot()
		check(err)
		check(runVariants(root, bins, *n, *window))
		return
	}
	ctx := context.Background()
	envoys := 2
	if dp.Round > 0 {
		envoys, *creates = 1, 0 // one Envoy takes the load
	}
	var lim bounds
	if *limits == "chart" && dp.Round == 0 {
		root, err := stack.FindRoot()
		check(err)
		lim, err = chartBounds(root)
		check(err)
		fmt.Printf("the chart's memory limits: controller %d MiB (and GOMEMLIMIT), each Envoy %d MiB\n", lim["sluice"]>>20, lim["envoy"]>>20)
	}
	st, err := stack.Start(ctx, stack.Options{SkipSluice: true, SkipPods: true, Envoys: envoys, Controllers: 1, MemoryLimits: lim})
	check(err)
	defer st.Stop()
	cfg := *st.RESTConfig
	cfg.QPS, cfg.Burst = 500, 1000
	kube := kubernetes.NewForConfigOrDie(&cfg)
	kn := clientset.NewForConfigOrDie(&cfg)

	start := time.Now()
	services := *creates // the KIngresses created later need their Services
	if *fleet > 0 {
		services = fleetCreates(*creates)
	}
	check(populate(ctx, kube, kn, *n, services))
	fmt.Printf("created %d KIngresses and %d Services in %s\n", *n, 2*(*n+services), time.Since(start).Round(time.Second))
	if dp.Round > 0 {
		check(setupDataplane(ctx, st, kube, kn))
	}

	if *prime {
		first := parseBin(bins[0], st.Options().Root, *n)
		t := time.Now()
		check(st.StartGateway(ctx, first.Bin, append(first.Env, lim.env()...)...))
		check(waitAllReady(ctx, kn, *n))
		st.StopGateway()
		fmt.Printf("primed: %d KIngresses Ready in %s (%s)\n", *n, time.Since(t).Round(time.Second), first.Bin)
	}

	if dp.Round > 0 {
		check(runDataplane(ctx, st, bins, *n, dp))
		return
	}
	if *fleet > 0 {
		var runs []fleetRun
		for _, b := range bins {
			r := parseBin(b, st.Options().Root, *n)
			fr := fleetRun{Name: r.Name, Bin: r.Bin, N: *n, F: *fleet, Env: append(r.Env, lim.env()...)}
			check(measureFleet(ctx, st, kn, &fr, *creates))
			fr.NotMeasured = fleetNotMeasured(fr)
			runs = append(runs, fr)
			st.StopGateway()
		}
		reportFleet(runs)
		check(saveResults(st.Options().Root, fmt.Sprintf("bench-fleet-%d-%d", *n, *fleet), runs))
		for _, r := range runs {
			if len(r.NotMeasured) > 0 {
				check(fmt.Errorf("%s: not measured: %s", r.Name, strings.Join(r.NotMeasured, ", ")))
			}
		}
		return
	}
	var runs []run
	for _, b := range bins {
		r := parseBin(b, st.Options().Root, *n)
		if *profile > 0 {
			go saveProfile(st, filepath.Join(st.Options().Root, "e2e", "results", fmt.Sprintf("bench-scale-%d-%s-cold.pprof", *n, r.Name)), *profile)
		}
		r.Env = append(r.Env, lim.env()...)
		check(measure(ctx, st, kn, &r, *n, *creates, *updates, *sample, *profile > 0))
		r.Memory = readMemory(st, lim, envoys)
		if r.Memory.OOMKills > 0 {
			check(fmt.Errorf("%s: %d processes killed for their memory limit", r.Name, r.Memory.OOMKills))
		}
		r.NotMeasured = notMeasured(r)
		runs = append(runs, r)
		st.StopGateway()
	}
	report(runs)
	check(saveResults(st.Options().Root, fmt.Sprintf("bench-scale-%d", *n), runs))
	for _, r := range runs {
		if len(r.NotMeasured) > 0 {
			check(fmt.Errorf("%s: not measured: %s", r.Name, strings.Join(r.NotMeasured, ", ")))
		}
	}
}

// parseBin reads a -bin value, name=path[,VAR=value...], a relative path
// being under root.
func parseBin(b, root string, n int) run {
	name, path, ok := strings.Cut(b, "=")
	if !ok {
		name, path = filepath.Base(b), b
	}
	path, envs, _ := strings.Cut(path, ",")
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, path)
	}
	r := run{Name: name, Bin: path, N: n}
	if envs != "" {
		r.Env = strings.Split(envs, ",")
	}
	return r
}

// waitAllReady returns once n KIngresses are Ready.
func waitAllReady(ctx context.Context, kn clientset.Interface, n int) error {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		list, err := kn.NetworkingV1alpha1().Ingresses("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return err
		}
		ready := 0
		for i := range list.Items {
			if list.Items[i].IsReady() {
				ready++
			}
		}
		if ready >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d KIngresses Ready after 30 minutes", ready, n)
		}
		time.Sleep(3 * time.Second)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(1)
	}
}

func measure(ctx context.Context, st *stack.Stack, kn clientset.Interface, r *run, n, creates, updates, sample int, profile bool) error {
	fmt.Printf("== %s (%s): cold start with %d KIngresses\n", r.Name, r.Bin, n)
	t0 := time.Now()
	if err := st.StartGateway(ctx, r.Bin, r.Env...); err != nil {
		return err
	}
	hosts := rand.Perm(n)[:min(sample, n)]
	for _, i := range hosts {
		if _, err := waitServed(hostOf(i), st.External.HTTP, 5*time.Minute); err != nil {
			return err
		}
	}
	r.ColdStartMs = ms(time.Since(t0))
	r.ControllerCPUms = cpuMs(st.Pid("sluice-0"))
	fmt.Printf("   %d sampled hosts served %.0f ms after start (controller CPU %.0f ms)\n", len(hosts), r.ColdStartMs, r.ControllerCPUms)
	settle(st)

	before := rxBytes(st)
	if profile {
		go saveProfile(st, filepath.Join(st.Options().Root, "e2e", "results", fmt.Sprintf("bench-scale-%d-%s-changes.pprof", n, r.Name)), 10*time.Second)
	}
	for k := 0; k < creates; k++ {
		i := n + k
		t := time.Now()
		if _, err := kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Create(ctx, kingress(i), metav1.CreateOptions{}); err != nil {
			return err
		}
		at, err := waitServed(hostOf(i), st.External.HTTP, time.Minute)
		if err != nil {
			return err
		}
		r.CreateMs = append(r.CreateMs, ms(at.Sub(t)))
		time.Sleep(100 * time.Millisecond)
	}
	for k := 0; k < updates; k++ {
		i := k * (n / max(updates, 1))
		ing, err := kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Get(ctx, svcOf(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		tag := fmt.Sprintf("%s-%s-%d.%s.example.com", r.Name, svcOf(i), k, nsOf(i))
		ing.Spec.Rules[1].Hosts = append(ing.Spec.Rules[1].Hosts, tag)
		t := time.Now()
		if _, err := kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
			return err
		}
		at, err := waitServed(tag, st.External.HTTP, time.Minute)
		if err != nil {
			return err
		}
		r.UpdateMs = append(r.UpdateMs, ms(at.Sub(t)))
		time.Sleep(100 * time.Millisecond)
	}
	after := rxBytes(st)
	for e := range after {
		if before[e] < 0 || after[e] < 0 {
			r.BytesPerChange = append(r.BytesPerChange, -1)
			continue
		}
		r.BytesPerChange = append(r.BytesPerChange, float64(after[e]-before[e])/float64(creates+updates))
	}
	settle(st)
	r.ControllerRSS = rss(st.Pid("sluice-0"))
	r.ControllerHeap = st.LiveHeap(0)
	if profile {
		saveHeap(st, filepath.Join(st.Options().Root, "e2e", "results", fmt.Sprintf("bench-scale-%d-%s-heap.pprof", n, r.Name)))
	}
	for e := 0; e < 2; e++ {
		r.EnvoyHeap = append(r.EnvoyHeap, int64(envoyStat(st, e, "server.memory_allocated")))
	}
	// Put the objects back as they were for the next build.
	if err := parallel(creates, func(k int) error {
		return kn.NetworkingV1alpha1().Ingresses(nsOf(n+k)).Delete(ctx, svcOf(n+k), metav1.DeleteOptions{})
	}); err != nil {
		return err
	}
	return parallel(updates, func(k int) error {
		i := k * (n / max(updates, 1))
		ing, err := kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Get(ctx, svcOf(i), metav1.GetOptions{})
		if err != nil {
			return err
		}
		ing.Spec = kingress(i).Spec
		_, err = kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Update(ctx, ing, metav1.UpdateOptions{})
		return err
	})
}

// saveProfile fetches a CPU profile from the controller as soon as its
// admin port answers.
func saveProfile(st *stack.Stack, path string, d time.Duration) {
	base := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile", st.Options().Ports.SluiceAdmin)
	for i := 0; i < 2000; i++ {
		resp, err := http.Get(fmt.Sprintf("%s?seconds=%d", base, int(d.Seconds())))
		if err != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		defer resp.Body.Close()
		f, err := os.Create(path)
		if err == nil {
			_, _ = io.Copy(f, resp.Body)
			f.Close()
			fmt.Println("   CPU profile in", path)
		}
		return
	}
}

// saveHeap saves the controller's heap profile.
func saveHeap(st *stack.Stack, path string) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", st.Options().Ports.SluiceAdmin))
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if f, err := os.Create(path); err == nil {
		_, _ = io.Copy(f, resp.Body)
		f.Close()
		fmt.Println("   heap profile in", path)
	}
}

var probe = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// waitServed returns when the first of need requests in a row, each on a
// new connection, got Envoy's 503 for host.
func waitServed(host, addr string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var first time.Time
	run := 0
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
		req.Host = host
		now := time.Now()
		resp, err := probe.Do(req)
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		// Envoy's own answer for a served route without endpoints; an
		// overloaded Envoy's 503 says "envoy overloaded".
		if err == nil && resp.StatusCode == http.StatusServiceUnavailable && string(body) == "no healthy upstream" {
			if run == 0 {
				first = now
			}
			if run++; run == need {
				return first, nil
			}
			continue
		}
		run = 0
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%s not served within %s", host, timeout)
}

// settle waits until the controller's CPU use drops below 5 % for a second.
func settle(st *stack.Stack) {
	pid := st.Pid("sluice-0")
	last := cpuMs(pid)
	for i := 0; i < 120; i++ {
		time.Sleep(time.Second)
		now := cpuMs(pid)
		if now-last < 50 {
			return
		}
		last = now
	}
}

func rxBytes(st *stack.Stack) []float64 {
	return []float64{
		envoyStat(st, 0, "cluster.sluice-xds.upstream_cx_rx_bytes_total"),
		envoyStat(st, 1, "cluster.sluice-xds.upstream_cx_rx_bytes_total"),
	}
}

// envoyStat is one of Envoy i's stats, or -1 when it cannot be read.
func envoyStat(st *stack.Stack, i int, name string) float64 {
	url := fmt.Sprintf("http://127.0.0.1:%d/stats?filter=^%s$", st.Options().Ports.EnvoyAdmin+i, strings.ReplaceAll(name, ".", `\.`))
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v float64
	var got string
	if _, err := fmt.Fscanf(resp.Body, "%s %f", &got, &v); err != nil {
		return -1
	}
	return v
}

type stat struct {
	name string
	v    float64
}

// envoyStats returns Envoy i's stats whose names match re.
func envoyStats(st *stack.Stack, i int, re string) []stat {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=%s", st.Options().Ports.EnvoyAdmin+i, url.QueryEscape(re)))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []stat
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil {
			out = append(out, stat{name, f})
		}
	}
	return out
}

func rss(pid int) int64 { return procStatus(pid, "VmRSS:") }

// procStatus reads a size in /proc/pid/status (VmRSS:, VmHWM:) in bytes,
// or -1.
func procStatus(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			var kb int64
			fmt.Sscan(f[1], &kb)
			return kb << 10
		}
	}
	return -1
}

// cpuMs is the user plus system CPU time of pid (clock ticks of 10 ms),
// or -1.
func cpuMs(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var u, k float64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &k)
	return (u + k) * 10
}
