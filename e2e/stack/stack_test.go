//go:build e2e

package stack

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// The stack needs root and the built binaries (make tools).
func needStack(t *testing.T) {
	t.Helper()
	if err := NeedRoot(); err != nil {
		t.Fatal(err)
	}
}

// startPodStack starts the stack without Sluice, re-probing unready pods
// every 200 ms, and stops it when the test ends.
func startPodStack(t *testing.T, timeout time.Duration) (context.Context, *Stack) {
	t.Helper()
	needStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	s, err := Start(ctx, Options{SkipSluice: true, UnreadyProbePeriod: 200 * time.Millisecond, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return ctx, s
}

func TestStackUpDownTwice(t *testing.T) {
	needStack(t)
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		// The second round runs without the pod runner: the test writes the
		// pod status, which checks the endpoint controllers on their own.
		s, err := Start(ctx, Options{SkipSluice: true, SkipPods: round == 2, Log: testWriter{t}})
		if err != nil {
			cancel()
			t.Fatalf("round %d: start: %v", round, err)
		}
		checkCluster(ctx, t, s)
		checkEndpoints(ctx, t, s)
		if err := s.Stop(); err != nil {
			t.Errorf("round %d: stop: %v", round, err)
		}
		cancel()
		checkGone(t, s)
	}
}

func checkCluster(ctx context.Context, t *testing.T, s *Stack) {
	t.Helper()
	cs := s.Client
	for _, ns := range []string{SystemNS, TestNS} {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("ServiceAccount %s/default: %v", ns, err)
		}
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
	}
	if !ready {
		t.Errorf("node %s is not Ready: %+v", NodeName, node.Status.Conditions)
	}
	cm, err := cs.CoreV1().ConfigMaps(SystemNS).Get(ctx, "config-network", metav1.GetOptions{})
	if err != nil || cm.Data["ingress-class"] != IngressClass {
		t.Errorf("config-network: %v %v", cm, err)
	}
	gw, err := cs.CoreV1().Services(SystemNS).Get(ctx, ExternalGWName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("gateway Service: %v", err)
	}
	nodePorts := map[int32]int32{}
	for _, p := range gw.Spec.Ports {
		nodePorts[p.Port] = p.NodePort
	}
	if nodePorts[80] != 31080 || nodePorts[443] != 31443 || gw.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("gateway Service: type %s nodePorts %v, want NodePort 80->31080 443->31443", gw.Spec.Type, nodePorts)
	}
	if _, err := cs.CoreV1().Services(SystemNS).Get(ctx, InternalGWName, metav1.GetOptions{}); err != nil {
		t.Errorf("internal gateway Service: %v", err)
	}
	res, err := cs.Discovery().ServerResourcesForGroupVersion("networking.internal.knative.dev/v1alpha1")
	if err != nil || len(res.APIResources) == 0 {
		t.Errorf("KIngress API not served: %v", err)
	}
	sv, err := cs.Discovery().ServerVersion()
	if err != nil || sv.GitVersion != "v1.35.4" {
		t.Errorf("server version %v (%v), want v1.35.4", sv, err)
	}
	if ifc, err := net.InterfaceByName(s.Options().Bridge); err != nil || ifc.Flags&net.FlagUp == 0 {
		t.Errorf("bridge %s not up: %v", s.Options().Bridge, err)
	}
}

// checkEndpoints shows the endpoint controllers publish a Ready pod on the
// node with an address on the bridge subnet. Without the pod runner the test
// writes the pod status itself.
func checkEndpoints(ctx context.Context, t *testing.T, s *Stack) {
	t.Helper()
	cs := s.Client
	const name = "echo"
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: TestNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := cs.CoreV1().Services(TestNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service: %v", err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: TestNS, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{runtimeContainer()}},
	}
	if s.PodsSkipReason != "" {
		pod.Spec.NodeName = NodeName
	}
	if _, err := cs.CoreV1().Pods(TestNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Pod: %v", err)
	}
	if s.PodsSkipReason != "" {
		t.Logf("pod runner absent (%s): writing the pod status by hand", s.PodsSkipReason)
		writeReadyStatus(ctx, t, cs, s.BridgeIP)
	}
	pod, err := waitPodReady(ctx, cs, name)
	if err != nil {
		t.Fatalf("pod never Ready: %v", err)
	}
	ip := pod.Status.PodIP
	if !mustCIDR(s.Options().Subnet).Contains(net.ParseIP(ip)) {
		t.Errorf("pod IP %s is not in the pod subnet %s", ip, s.Options().Subnet)
	}
	if s.PodsSkipReason == "" {
		// The pod answers from its own network namespace on the bridge.
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}).Get("http://" + hostPort(ip, 8080) + "/")
		if err != nil {
			t.Errorf("GET the pod at %s:8080: %v", ip, err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET the pod at %s:8080: %s", ip, resp.Status)
			}
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ep, err := cs.CoreV1().Endpoints(TestNS).Get(ctx, name, metav1.GetOptions{}) //nolint:staticcheck // the conformance suite waits on Endpoints
		if err != nil || len(ep.Subsets) == 0 || len(ep.Subsets[0].Addresses) == 0 {
			return false, nil
		}
		return ep.Subsets[0].Addresses[0].IP == ip && ep.Subsets[0].Ports[0].Port == 8080, nil
	})
	if err != nil {
		t.Errorf("Endpoints %s/%s never listed %s:8080: %v", TestNS, name, ip, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		l, err := cs.DiscoveryV1().EndpointSlices(TestNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
		if err != nil {
			return false, nil
		}
		for _, sl := range l.Items {
			for _, e := range sl.Endpoints {
				if len(e.Addresses) > 0 && e.Addresses[0] == ip && e.Conditions.Ready != nil && *e.Conditions.Ready {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no ready EndpointSlice endpoint %s for %s/%s: %v", ip, TestNS, name, err)
	}
}

func writeReadyStatus(ctx context.Context, t *testing.T, cs kubernetes.Interface, bridgeIP string) {
	t.Helper()
	p, err := cs.CoreV1().Pods(TestNS).Get(ctx, "echo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(bridgeIP).To4()
	podIP := net.IPv4(ip[0], ip[1], ip[2], 50).String()
	now := metav1.Now()
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: podIP, PodIPs: []corev1.PodIP{{IP: podIP}},
		HostIP: bridgeIP, HostIPs: []corev1.HostIP{{IP: bridgeIP}}, StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
	}
	if _, err := cs.CoreV1().Pods(TestNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing pod status: %v", err)
	}
}

// runtimeContainer runs Knative's runtime test image on port 8080, Ready
// once it answers.
func runtimeContainer() corev1.Container {
	return corev1.Container{
		Name: "app", Image: "runtime",
		Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}},
		Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(8080)}},
			PeriodSeconds: 1,
		},
	}
}

func waitPodReady(ctx context.Context, cs kubernetes.Interface, name string) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(TestNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pod = p
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
				return true, nil
			}
		}
		return false, nil
	})
	return pod, err
}

func checkGone(t *testing.T, s *Stack) {
	t.Helper()
	if linkExists(s.Options().Bridge) {
		t.Errorf("bridge %s still exists after Stop", s.Options().Bridge)
	}
	if pids, _ := filepath.Glob(filepath.Join(s.Options().StateDir, "pids", "*")); len(pids) > 0 {
		t.Errorf("pid files left after Stop: %v", pids)
	}
	if _, ok := OwnerPid(s.Options().StateDir); ok {
		t.Errorf("owner.pid still present after Stop")
	}
	for _, port := range []int{s.Options().Ports.Etcd, s.Options().Ports.APIServer, s.Options().Ports.ControllerManager} {
		if c, err := net.DialTimeout("tcp", hostPort("127.0.0.1", port), time.Second); err == nil {
			c.Close()
			t.Errorf("port %d still answers after Stop", port)
		}
	}
	out, _ := run("ip", "netns", "list")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, PodNetnsPrefix) {
			t.Errorf("pod netns left after Stop: %s", l)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Sluice and Envoy replicas may die (failover tests kill them) and come back
// with Restart, without the stack failing.
func TestStackRestartReplicas(t *testing.T) {
	needStack(t)
	root, err := FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(root, "bin", "sluice")) || !exists(filepath.Join(root, "bin", "envoy")) {
		t.Fatal("needs bin/sluice and bin/envoy: make build tools")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Controllers: 2, Envoys: 2, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	}()
	for _, name := range []string{"sluice-0", "envoy-1"} {
		before := s.Pid(name)
		if before == 0 {
			t.Fatalf("%s is not running", name)
		}
		if err := s.Kill(name, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(before, 5*time.Second)
		select {
		case err := <-s.Failed():
			t.Fatalf("the stack failed after %s was killed: %v", name, err)
		case <-time.After(500 * time.Millisecond):
		}
		if err := s.Restart(ctx, name); err != nil {
			t.Fatalf("restart %s: %v", name, err)
		}
		if after := s.Pid(name); after == 0 || after == before {
			t.Errorf("%s pid %d after restart (was %d)", name, after, before)
		}
	}
	for i := 0; i < 2; i++ {
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}).
			Get("http://" + hostPort("127.0.0.1", s.Options().Ports.EnvoyAdmin+i) + "/ready")
		if err != nil {
			t.Errorf("envoy-%d admin: %v", i, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("envoy-%d not ready after the restarts: %s", i, resp.Status)
		}
	}
}
