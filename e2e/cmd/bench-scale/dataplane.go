package main

// The data-plane mode (-dataplane D): what one request costs in the Envoy
// a build configures, next to the same Envoy binary holding a plain
// virtual-host configuration of the same routes (one route configuration,
// no scopes, no scope key: how net-kourier configures Envoy), same run.
// One Envoy each, with Envoy's default two workers, access logs off. Two
// hosts: one Envoy answers itself (a redirected host's 301, so only the
// listener, filters and route lookup run) and one proxied to a real
// backend (a small HTTP server of this process on the bridge's address,
// through an EndpointSlice). Rounds of D alternate between the two Envoys.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/translator"
)

const (
	dpNS          = "bench-dp"
	dpBackendPort = 18089 // the backend, on the bridge's address
	plainOffset   = 1000  // the plain Envoy's listener and admin ports: the stack's + this
)

var (
	redirectHost = "redirect." + dpNS + ".example.com"
	backendHost  = "backend." + dpNS + ".example.com"
)

// dpHosts are where the load goes and what they answer.
var dpHosts = []struct {
	name, host string
	want       int
}{{"redirect", redirectHost, http.StatusMovedPermanently}, {"backend", backendHost, http.StatusOK}}

type dpOptions struct {
	Round   time.Duration
	Rounds  int
	Clients int
}

// dpRun is one build's rounds, with the plain Envoy's taken between them.
type dpRun struct {
	Name, Bin string
	N         int
	Clients   int
	Round     string
	// Loads by "<build or plain> <redirect|backend>", one per round.
	Loads map[string][]load
}

// dpObjects are the backend Service, its EndpointSlice and the two
// ingresses the load goes to.
func dpObjects(bridgeIP string) (*corev1.Service, *discoveryv1.EndpointSlice, []*v1alpha1.Ingress) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: dpNS, Name: "backend"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromInt32(dpBackendPort),
		}}},
	}
	port := "http"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: dpNS, Name: "backend-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: "backend", discoveryv1.LabelManagedBy: "bench-scale"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{bridgeIP}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &port, Port: new(int32(dpBackendPort)), Protocol: new(corev1.ProtocolTCP)}},
	}
	ing := func(name, host string, opt v1alpha1.HTTPOption) *v1alpha1.Ingress {
		return &v1alpha1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: dpNS, Name: name, Annotations: map[string]string{networking.IngressClassAnnotationKey: class}},
			Spec: v1alpha1.IngressSpec{HTTPOption: opt, Rules: []v1alpha1.IngressRule{{
				Hosts: []string{host}, Visibility: v1alpha1.IngressVisibilityExternalIP,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: []v1alpha1.IngressBackendSplit{{
					IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: dpNS, ServiceName: "backend", ServicePort: intstr.FromInt32(80)},
					Percent:        100,
				}}}}},
			}}},
		}
	}
	return svc, slice, []*v1alpha1.Ingress{
		ing("backend", backendHost, v1alpha1.HTTPOptionEnabled),
		ing("redirect", redirectHost, v1alpha1.HTTPOptionRedirected),
	}
}

// setupDataplane creates the data-plane objects and turns access logs off.
func setupDataplane(ctx context.Context, st *stack.Stack, kube kubernetes.Interface, kn clientset.Interface) error {
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dpNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	svc, slice, ings := dpObjects(st.BridgeIP)
	if _, err := kube.CoreV1().Services(dpNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := kube.DiscoveryV1().EndpointSlices(dpNS).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, ing := range ings {
		if _, err := kn.NetworkingV1alpha1().Ingresses(dpNS).Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: stack.SystemNS, Name: translator.ConfigMapName},
		Data: map[string]string{"access-log": translator.AccessLogOff}}
	_, err := kube.CoreV1().ConfigMaps(stack.SystemNS).Create(ctx, cm, metav1.CreateOptions{})
	return err
}

// serveBackend answers every request with a short body.
func serveBackend(bridgeIP string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(bridgeIP, strconv.Itoa(dpBackendPort)))
	if err != nil {
		return err
	}
	body := []byte("ok\n")
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	}()
	return nil
}

// startPlain runs the plain Envoy (static.go) on the stack's external
// HTTP port + plainOffset.
func startPlain(st *stack.Stack, sluiceBin string, n int) (*envoyProc, error) {
	cfg, err := translateStatic(n, st.BridgeIP)
	if err != nil {
		return nil, err
	}
	p := st.Options().Ports
	l, err := cfg.listener(cfg.plainHCM(), p.ExternalHTTP+plainOffset)
	if err != nil {
		return nil, err
	}
	e := &envoyProc{Name: "plain", Admin: p.EnvoyAdmin + plainOffset, Port: p.ExternalHTTP + plainOffset, BaseID: 7399}
	if err := e.start(sluiceBin, filepath.Join(st.Options().BinDir, "envoy"), filepath.Join(st.Options().StateDir, "plain"), l, cfg.clusters, nil); err != nil {
		return nil, err
	}
	return e, e.waitReady(time.Minute)
}

// waitAnswers waits until host on addr answers want.
func waitAnswers(addr, host string, want int) error {
	for i := 0; i < 3000; i++ {
		if code, err := status(addr, host); err == nil && code == want {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s on %s never answered %d", host, addr, want)
}

func runDataplane(ctx context.Context, st *stack.Stack, bins []string, n int, o dpOptions) error {
	if err := serveBackend(st.BridgeIP); err != nil {
		return err
	}
	root := st.Options().Root
	first := parseBin(bins[0], root, n)
	pe, err := startPlain(st, first.Bin, n)
	if err != nil {
		return err
	}
	defer pe.stop()
	plain := pe.addr()
	for _, h := range dpHosts {
		if err := waitAnswers(plain, h.host, h.want); err != nil {
			return err
		}
	}
	var runs []dpRun
	for _, b := range bins {
		r := parseBin(b, root, n)
		fmt.Printf("== %s (%s): data plane, %d clients, %d rounds of %v\n", r.Name, r.Bin, o.Clients, o.Rounds, o.Round)
		if err := st.StartGateway(ctx, r.Bin, r.Env...); err != nil {
			return err
		}
		for _, h := range dpHosts {
			if err := waitAnswers(st.External.HTTP, h.host, h.want); err != nil {
				return err
			}
		}
		if _, err := waitServed(hostOf(n-1), st.External.HTTP, 5*time.Minute); err != nil {
			return err
		}
		settle(st)
		run := dpRun{Name: r.Name, Bin: r.Bin, N: n, Clients: o.Clients, Round: o.Round.String(), Loads: map[string][]load{}}
		envoys := []struct {
			name, addr string
			pid        int
		}{{r.Name, st.External.HTTP, st.Pid("envoy-0")}, {"plain", plain, pe.pid()}}
		for _, e := range envoys {
			for _, h := range dpHosts {
				hammer(e.addr, h.host, h.want, o.Clients, o.Round/4) // warm up
			}
		}
		for round := 0; round < o.Rounds; round++ {
			for _, h := range dpHosts {
				for k := range envoys {
					e := envoys[(k+round)%len(envoys)] // who goes first alternates
					envoy0, self0 := cpuMs(e.pid), cpuMs(os.Getpid())
					l := hammer(e.addr, h.host, h.want, o.Clients, o.Round)
					envoy1, self1 := cpuMs(e.pid), cpuMs(os.Getpid())
					if min(envoy0, self0, envoy1, self1) < 0 {
						return fmt.Errorf("%s: CPU time not measured (the process is gone?)", e.name)
					}
					if l.Requests > 0 {
						l.EnvoyCPUus = (envoy1 - envoy0) * 1000 / float64(l.Requests)
						l.ClientCPUus = (self1 - self0) * 1000 / float64(l.Requests)
					}
					key := e.name + " " + h.name
					run.Loads[key] = append(run.Loads[key], l)
					fmt.Printf("   round %d %-22s %8.0f req/s  p50 %5.0f us  p99 %6.0f us  Envoy CPU %5.1f us/req  clients %5.1f us/req  failed %d\n",
						round+1, key, l.PerSecond, l.P50us, l.P99us, l.EnvoyCPUus, l.ClientCPUus, l.Failed)
					if l.Failed > 0 {
						return fmt.Errorf("%s: %d requests failed", key, l.Failed)
					}
				}
			}
		}
		runs = append(runs, run)
		st.StopGateway()
	}
	reportDataplane(runs)
	return saveResults(root, fmt.Sprintf("bench-dataplane-%d", n), runs)
}

// reportDataplane prints the medians over the rounds: each build beside
// the plain Envoy measured in the same rounds.
func reportDataplane(runs []dpRun) {
	head := []string{fmt.Sprintf("N = %d, %d keep-alive clients, median of %d rounds of %s", runs[0].N, runs[0].Clients, len(runs[0].Loads[runs[0].Name+" "+dpHosts[0].name]), runs[0].Round)}
	for _, r := range runs {
		head = append(head, r.Name, "plain (same rounds)")
	}
	med := func(ls []load, f func(load) float64) float64 {
		xs := make([]float64, len(ls))
		for i, l := range ls {
			xs[i] = f(l)
		}
		return pct(xs, 50)
	}
	var rows []tableRow[dpRun]
	for _, host := range dpHosts {
		h := host.name
		for _, m := range []struct {
			label string
			f     func([]load) string
		}{
			{"requests/s", func(ls []load) string {
				return fmt.Sprintf("%.0f", med(ls, func(l load) float64 { return l.PerSecond }))
			}},
			{"p50 / p99", func(ls []load) string {
				return fmt.Sprintf("%.0f / %.0f us", med(ls, func(l load) float64 { return l.P50us }), med(ls, func(l load) float64 { return l.P99us }))
			}},
			{"Envoy CPU per request", func(ls []load) string {
				return fmt.Sprintf("%.1f us", med(ls, func(l load) float64 { return l.EnvoyCPUus }))
			}},
		} {
			rows = append(rows, tableRow[dpRun]{h + ": " + m.label, func(r dpRun) []string {
				return []string{m.f(r.Loads[r.Name+" "+h]), m.f(r.Loads["plain "+h])}
			}})
		}
	}
	printTable(head, runs, rows)
}
