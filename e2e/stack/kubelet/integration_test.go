//go:build e2e

package kubelet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

const gatewayDomain = "sluice-internal.knative-serving.svc.cluster.local"

// testImagesDir is where the integration test keeps built test images,
// under the repo's ignored .cache/ so builds are reused across runs.
func testImagesDir(t *testing.T) string {
	if d := os.Getenv("SLUICE_TEST_IMAGES_DIR"); d != "" {
		return d
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), ".cache", "test-images")
}

func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out)
}

// testBridge creates a bridge with a random name and a free /24 of
// 10.251.0.0/16, removed when the test ends.
func testBridge(t *testing.T, suffix string) (bridge, cidr, gw string) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		third := 2 + mrand.IntN(250)
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.251.%d.0/24", third))
		taken := false
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && (subnet.Contains(n.IP) || n.Contains(subnet.IP)) {
				taken = true
			}
		}
		if !taken {
			cidr, gw = subnet.String(), fmt.Sprintf("10.251.%d.1", third)
			break
		}
	}
	if cidr == "" {
		t.Fatal("no free /24 in 10.251.0.0/16")
	}
	bridge = "sltb" + suffix
	sh(t, "ip", "link", "add", bridge, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	sh(t, "ip", "addr", "add", gw+"/24", "dev", bridge)
	sh(t, "ip", "link", "set", bridge, "up")
	return bridge, cidr, gw
}

func netnsExists(t *testing.T, name string) bool {
	t.Helper()
	for _, line := range strings.Split(sh(t, "ip", "netns", "list"), "\n") {
		if n, _, _ := strings.Cut(strings.TrimSpace(line), " "); n == name {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func podCondition(p *corev1.Pod, ct corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == ct {
			return c.Status
		}
	}
	return ""
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: it creates a bridge, network namespaces and processes (sudo make e2e)")
	}
}

func buildImages(t *testing.T, names ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	images, err := BuildTestImages(ctx, testImagesDir(t), names...)
	if err != nil {
		t.Fatal(err)
	}
	return images
}

// testEnv is a kubelet running against a fake clientset on a bridge of its
// own, with its own netns prefix.
type testEnv struct {
	client                   *fake.Clientset
	suffix, cidr, gw, prefix string
	stale, logDir            string
	stop                     func()
}

func startKubelet(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	e := &testEnv{suffix: hex.EncodeToString(b), client: fake.NewClientset(), logDir: t.TempDir()}
	var bridge string
	bridge, e.cidr, e.gw = testBridge(t, e.suffix)
	e.prefix = "slt" + e.suffix + "-"

	// A leftover of a "crashed" earlier run, which Run must remove.
	e.stale = e.prefix + "stale"
	sh(t, "ip", "netns", "add", e.stale)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", e.stale).Run() })
	if err := writeNetnsFiles(e.stale, "x", "x"); err != nil {
		t.Fatal(err)
	}

	var watching chan struct{}
	if cfg.RestConfig == nil {
		cfg.Client = e.client
		// The fake's watches start when they are made, not at the
		// resourceVersion of the list before them as the API server's do:
		// a pod created between the pod runner's list and its watch would
		// never reach it. So tests create pods only once it watches.
		watching = make(chan struct{})
		var once sync.Once
		e.client.PrependWatchReactor("pods", func(a clienttesting.Action) (bool, watch.Interface, error) {
			w, err := e.client.Tracker().Watch(a.GetResource(), a.GetNamespace())
			if err == nil {
				once.Do(func() { close(watching) })
			}
			return true, w, err
		})
	}
	cfg.NodeName, cfg.Bridge, cfg.PodCIDR, cfg.Gateway = "node-test", bridge, e.cidr, e.gw
	cfg.LogDir, cfg.NetnsPrefix, cfg.Logger = e.logDir, e.prefix, zaptest.NewLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(e.stop)
	if watching != nil {
		select {
		case <-watching:
		case <-time.After(30 * time.Second):
			t.Fatal("the pod runner did not watch pods within 30s")
		}
	}
	return e
}

func TestRunPodsForReal(t *testing.T) {
	needRoot(t)
	images := buildImages(t, "runtime")
	e := startKubelet(t, Config{
		Images:     map[string]string{"runtime": images["runtime"], "crasher": "/bin/false"},
		ExtraHosts: map[string]string{gatewayDomain: "10.251.0.1"},
	})
	client, suffix, cidr, gw, prefix, stale, logDir, stopRun := e.client, e.suffix, e.cidr, e.gw, e.prefix, e.stale, e.logDir, e.stop
	ctx := context.Background()

	pods := client.CoreV1().Pods("serving-tests")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "runtime-pod", Namespace: "serving-tests", UID: types.UID("uid-runtime-" + suffix)},
		Spec: corev1.PodSpec{
			NodeName: "node-test",
			Containers: []corev1.Container{{
				Name:  "foo",
				Image: "ko://knative.dev/networking/test/test_images/runtime",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Env: []corev1.EnvVar{
					{Name: "PORT", Value: "8080"},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/healthz", Port: intstr.FromString("http"),
					}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Not ours: must be left alone.
	other := pod.DeepCopy()
	other.Name, other.UID, other.Spec.NodeName = "elsewhere", "uid-elsewhere", "other-node"
	if _, err := pods.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var got *corev1.Pod
	var err error
	waitFor(t, "runtime pod Ready", 60*time.Second, func() (bool, error) {
		got, err = pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && got.Status.PodIP != "" && podCondition(got, corev1.PodReady) == corev1.ConditionTrue, err
	})
	podIP := got.Status.PodIP
	if !mustCIDR(t, cidr).Contains(net.ParseIP(podIP)) || podIP == gw {
		t.Fatalf("pod IP %s not a pod address of %s", podIP, cidr)
	}
	if got.Status.Phase != corev1.PodRunning || got.Status.HostIP != gw || len(got.Status.PodIPs) != 1 {
		t.Errorf("status: phase %s hostIP %s podIPs %v", got.Status.Phase, got.Status.HostIP, got.Status.PodIPs)
	}
	for _, ct := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady} {
		if podCondition(got, ct) != corev1.ConditionTrue {
			t.Errorf("condition %s is not True: %+v", ct, got.Status.Conditions)
		}
	}
	if cs := got.Status.ContainerStatuses; len(cs) != 1 || !cs[0].Ready || cs[0].Started == nil || !*cs[0].Started || cs[0].State.Running == nil {
		t.Errorf("container status: %+v", cs)
	}

	// The pod answers from the root namespace over the bridge.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(podIP, "8080")+"/", nil)
	req.Host = "runtime.test"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var info struct {
		Request struct {
			Host string `json:"host"`
		} `json:"request"`
		Host struct {
			Env map[string]string `json:"envs"`
		} `json:"host"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &info) != nil {
		t.Fatalf("GET /: %d %s", resp.StatusCode, body)
	}
	if info.Request.Host != "runtime.test" || info.Host.Env["POD_IP"] != podIP || info.Host.Env["PORT"] != "8080" {
		t.Errorf("runtime saw host %q, POD_IP %q, PORT %q", info.Request.Host, info.Host.Env["POD_IP"], info.Host.Env["PORT"])
	}

	// /healthz answers 400 without the kube-probe UA, so Ready proves the
	// probe's UA; the runtime logs each request too.
	resp, err = hc.Get("http://" + net.JoinHostPort(podIP, "8080") + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("/healthz without kube-probe UA: %d, want 400", resp.StatusCode)
	}
	logs, err := os.ReadFile(filepath.Join(logDir, "serving-tests_runtime-pod_foo.log"))
	if err != nil || !strings.Contains(string(logs), "User-Agent: "+ProbeUserAgent) {
		t.Errorf("runtime log lacks the probe's User-Agent (%v):\n%s", err, logs)
	}

	// Namespace, hosts file and resolver as the process sees them.
	ns := netnsName(prefix, pod.UID)
	if !netnsExists(t, ns) {
		t.Fatalf("netns %s missing", ns)
	}
	if out := sh(t, "ip", "netns", "exec", ns, "getent", "hosts", gatewayDomain); !strings.HasPrefix(out, "10.251.0.1 ") {
		t.Errorf("pod resolves %s to %q, want 10.251.0.1", gatewayDomain, out)
	}
	if out := sh(t, "ip", "netns", "exec", ns, "getent", "hosts", "runtime-pod"); !strings.HasPrefix(out, podIP+" ") {
		t.Errorf("pod resolves its own name to %q, want %s", out, podIP)
	}
	var pids []int
	for _, f := range strings.Fields(sh(t, "ip", "netns", "pids", ns)) {
		var pid int
		fmt.Sscan(f, &pid)
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatal("no process in the pod namespace")
	}

	// Leftovers are gone; the other node's pod got no status.
	if netnsExists(t, stale) {
		t.Error("stale netns from an earlier run not removed")
	}
	if _, err := os.Stat(filepath.Join(etcNetns, stale)); !os.IsNotExist(err) {
		t.Errorf("stale /etc/netns entry not removed: %v", err)
	}
	if o, _ := pods.Get(ctx, "elsewhere", metav1.GetOptions{}); o == nil || o.Status.PodIP != "" {
		t.Errorf("pod of another node was touched: %+v", o)
	}

	// A crashing container is restarted with back-off and shown as such.
	crasher := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crasher", Namespace: "serving-tests", UID: types.UID("uid-crasher-" + suffix)},
		Spec:       corev1.PodSpec{NodeName: "node-test", Containers: []corev1.Container{{Name: "c", Image: "crasher"}}},
	}
	if _, err := pods.Create(ctx, crasher, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "crasher restarted", 30*time.Second, func() (bool, error) {
		p, err := pods.Get(ctx, crasher.Name, metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 {
			return false, err
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount >= 1 && cs.LastTerminationState.Terminated != nil &&
			cs.LastTerminationState.Terminated.ExitCode == 1 && !cs.Ready &&
			podCondition(p, corev1.PodReady) == corev1.ConditionFalse, nil
	})
	crasherNS := netnsName(prefix, crasher.UID)
	crasherIP := ""
	if p, _ := pods.Get(ctx, crasher.Name, metav1.GetOptions{}); p != nil {
		crasherIP = p.Status.PodIP
	}
	if crasherIP == "" || crasherIP == podIP {
		t.Errorf("crasher IP %q (runtime pod has %s)", crasherIP, podIP)
	}
	// Deleted outright (no graceful deletion): just cleaned up.
	if err := pods.Delete(ctx, crasher.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "crasher netns removed", 30*time.Second, func() (bool, error) { return !netnsExists(t, crasherNS), nil })

	// Graceful deletion: the kubelet stops the process, removes the network
	// and then deletes the Pod object itself.
	got, _ = pods.Get(ctx, pod.Name, metav1.GetOptions{})
	now := metav1.Now()
	grace := int64(5)
	got.DeletionTimestamp, got.DeletionGracePeriodSeconds = &now, &grace
	if _, err := pods.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pod object deleted by the kubelet", 30*time.Second, func() (bool, error) {
		_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if netnsExists(t, ns) {
		t.Errorf("netns %s still exists", ns)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still alive (%v)", pid, err)
		}
	}
	if _, err := os.Stat(filepath.Join(etcNetns, ns)); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s still exists: %v", ns, err)
	}
	if _, err := net.InterfaceByName(vethName(ns)); err == nil {
		t.Errorf("veth %s still exists", vethName(ns))
	}

	// A pod running at shutdown is stopped and cleaned up by Run itself.
	last := crasher.DeepCopy()
	last.Name, last.UID = "last", types.UID("uid-last-"+suffix)
	last.Spec.Containers[0].Image = "runtime"
	last.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PORT", Value: "8080"}}
	// Exec readiness the way Knative's runtime image offers it (the image's
	// entrypoint path maps to its binary), TCP liveness that holds.
	last.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/ko-app/runtime", "probe"}}},
		PeriodSeconds: 1,
	}
	last.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(8080)}},
		PeriodSeconds: 1, FailureThreshold: 3,
	}
	// A liveness probe that always fails gets its container restarted.
	unhealthy := last.DeepCopy()
	unhealthy.Name, unhealthy.UID = "unhealthy", types.UID("uid-unhealthy-"+suffix)
	unhealthy.Spec.Containers[0].LivenessProbe.TCPSocket.Port = intstr.FromInt(9)
	for _, p := range []*corev1.Pod{last, unhealthy} {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lastNS := netnsName(prefix, last.UID)
	waitFor(t, "last pod Ready via its exec probe", 30*time.Second, func() (bool, error) {
		p, err := pods.Get(ctx, last.Name, metav1.GetOptions{})
		return err == nil && podCondition(p, corev1.PodReady) == corev1.ConditionTrue, err
	})
	waitFor(t, "unhealthy pod restarted by its liveness probe", 30*time.Second, func() (bool, error) {
		p, err := pods.Get(ctx, unhealthy.Name, metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) != 1 {
			return false, err
		}
		return p.Status.ContainerStatuses[0].RestartCount >= 1, nil
	})
	if p, _ := pods.Get(ctx, last.Name, metav1.GetOptions{}); p == nil || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("healthy pod was restarted: %+v", p)
	}
	stopRun()
	for _, n := range []string{lastNS, ns, crasherNS, netnsName(prefix, unhealthy.UID)} {
		if netnsExists(t, n) {
			t.Errorf("netns %s left after Run returned", n)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(etcNetns, prefix+"*")); len(m) > 0 {
		t.Errorf("/etc/netns entries left: %v", m)
	}
}
