//go:build e2e

// Package install runs the README's "Install on the local stack" word for
// word: the image built here, the stack with Knative Serving and no Sluice
// of its own, helm install of deploy/helm/sluice (its pods run by the pod
// runner), a Knative Service served through the chart's Envoy, `sluice
// status`, then helm upgrade under load and helm uninstall.
package install

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
)

const (
	systemNS = stack.SystemNS
	host     = "hello.default.example.com"
	release  = "sluice"
)

func TestMain(m *testing.M) {
	if err := stack.NeedRoot(); err != nil {
		fmt.Println("install e2e: FAIL:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// readmeBlocks returns the shell blocks of README.md that follow a
// "<!-- install-test: NAME -->" line, by name.
func readmeBlocks(t *testing.T, root string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	var name string
	var body []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "<!-- install-test: "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- install-test: "), " -->")
		case name != "" && !in && strings.HasPrefix(line, "```"):
			in = true
		case in && line == "```":
			out[name] = strings.Join(body, "\n") + "\n"
			name, body, in = "", nil, false
		case in:
			body = append(body, line)
		}
	}
	for _, want := range []string{"install", "upgrade", "uninstall"} {
		if out[want] == "" {
			t.Fatalf("README.md has no block after <!-- install-test: %s -->", want)
		}
	}
	return out
}

// run runs one README block with bash, as a user would paste it, from the
// repository root. Its environment has no KUBECONFIG: the block sets what
// it needs. Exported variables carry over between blocks through env.
type shell struct {
	root string
	env  []string
	log  *os.File
}

func (sh *shell) run(t *testing.T, name, script string) string {
	t.Helper()
	t.Logf("README block %q:\n%s", name, script)
	// The block's exports are printed at its end for the next block.
	const mark = "### sluice-install-env ###"
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script+"echo '"+mark+"'; env -0\n")
	cmd.Dir = sh.root
	cmd.Env = sh.env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = sh.log
	start := time.Now()
	err := cmd.Run()
	text, envPart, _ := strings.Cut(out.String(), mark+"\n")
	fmt.Fprintf(sh.log, "--- block %s (%s):\n%s\n", name, time.Since(start).Round(time.Second), text)
	if err != nil {
		t.Fatalf("README block %q: %v\n%s\n(stderr in %s)", name, err, text, sh.log.Name())
	}
	if envPart != "" {
		sh.env = strings.Split(strings.TrimSuffix(envPart, "\x00"), "\x00")
	}
	t.Logf("README block %q took %s; output:\n%s", name, time.Since(start).Round(time.Second), text)
	return text
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	return env
}

func TestInstallFromREADME(t *testing.T) {
	root, err := stack.FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, root)
	if _, err := stack.Attach(context.Background(), stack.Options{}); err == nil {
		t.Fatal("a stack is already running; stop it first (make down)")
	}
	logf, err := os.CreateTemp("", "sluice-install-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	sh := &shell{root: root, env: cleanEnv(), log: logf}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd := exec.Command("make", "down")
			cmd.Dir = root
			_ = cmd.Run()
		}
	})

	// Install, as the README says.
	out := sh.run(t, "install", blocks["install"])
	if !strings.Contains(out, `"name":"hello"`) || !strings.Contains(out, `"host":"`+host+`"`) {
		t.Errorf("the Knative Service did not answer through the gateway:\n%s", out)
	}
	s, err := stack.Attach(context.Background(), stack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kube := s.Client
	ctx := context.Background()
	gatewayPods := func() []string { return podNames(t, s, "app.kubernetes.io/component=gateway") }
	controllerPods := func() []string { return podNames(t, s, "app.kubernetes.io/component=controller") }

	// One Envoy per node, from the DaemonSet; two controllers.
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := kube.AppsV1().DaemonSets(systemNS).Get(ctx, "sluice-gateway", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if int(ds.Status.DesiredNumberScheduled) != len(nodes.Items) || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled {
		t.Errorf("DaemonSet: %d desired, %d ready, %d nodes", ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, len(nodes.Items))
	}
	envoys := gatewayPods()
	controllers := controllerPods()
	if len(envoys) != len(nodes.Items) || len(controllers) != 2 {
		t.Fatalf("gateway pods %v, controller pods %v", envoys, controllers)
	}
	// sluice status, from the chart's controllers, named the Envoy pod
	// (its node id is its pod name) as SYNCED and serving the ingress.
	for _, e := range envoys {
		fleet := regexp.MustCompile(`(?m)^` + e + ` +` + release + `-controller-\S+ +[0-9]+% +SYNCED`)
		serving := regexp.MustCompile(`(?m)^` + e + ` +` + release + `-controller-\S+ +yes +RDS ingress/default/hello SYNCED`)
		if !fleet.MatchString(out) || !serving.MatchString(out) {
			t.Errorf("sluice status does not show %s SYNCED and serving default/hello:\n%s", e, out)
		}
	}
	// The pods run as the chart says: the controller from the image's
	// binary, both as uid 65532.
	checkProcesses(t)

	// helm upgrade with a changed value, under load.
	gateway := serviceIP(t, s, "sluice-gateway")
	load := startLoad(gateway)
	drained := make(chan time.Duration, 1)
	go func() { drained <- deletionTook(s, envoys[0], 4*time.Minute) }()
	time.Sleep(3 * time.Second)
	sh.run(t, "upgrade", blocks["upgrade"])
	// The old Envoy drains for the chart's drainSeconds (its preStop hook)
	// before it stops: keep the load on until it is gone.
	took := <-drained
	if took == 0 {
		t.Fatalf("the old Envoy pod %s is not gone", envoys[0])
	}
	waitGone(t, s, envoys[1:], 2*time.Minute) // any other node's
	if took < 29*time.Second {
		t.Errorf("the old Envoy pod went %s after its deletion; the chart's preStop drains for 30s", took)
	}
	t.Logf("the old Envoy pod went %s after its deletion (preStop drain: 30s)", took.Round(100*time.Millisecond))
	waitGone(t, s, controllers, 2*time.Minute)
	time.Sleep(2 * time.Second)
	total, failed, firstErr := load.stop()
	t.Logf("during helm upgrade: %d requests, %d failed %v", total, failed, firstErr)
	if total < 100 || failed > 0 {
		t.Errorf("during helm upgrade: %d requests, %d failed (first: %v)", total, failed, firstErr)
	}
	if now := gatewayPods(); len(now) != len(envoys) || now[0] == envoys[0] {
		t.Errorf("gateway pods before %v, after %v: want rolled", envoys, now)
	}
	if now := controllerPods(); len(now) != 2 || now[0] == controllers[0] || now[1] == controllers[1] {
		t.Errorf("controller pods before %v, after %v: want rolled", controllers, now)
	}
	assertServed(t, gateway)

	// helm uninstall: nothing of the chart is left. The last command of the
	// block stops the stack, so look before it.
	un := strings.Replace(blocks["uninstall"], "make down\n", "", 1)
	if un == blocks["uninstall"] {
		t.Fatalf("the uninstall block does not end with make down:\n%s", blocks["uninstall"])
	}
	sh.run(t, "uninstall (without make down)", un)
	eventually(t, 2*time.Minute, "the chart's pods and processes gone", func() error {
		if p := append(gatewayPods(), controllerPods()...); len(p) > 0 {
			return fmt.Errorf("pods %v", p)
		}
		return checkNoProcesses()
	})
	if left := leftovers(t, s); len(left) > 0 {
		t.Errorf("left behind by helm uninstall:\n%s", strings.Join(left, "\n"))
	}
	sh.run(t, "make down", "make down\n")
	stopped = true
	if _, err := stack.Attach(context.Background(), stack.Options{}); err == nil {
		t.Error("the stack still runs after make down")
	}
}

func podNames(t *testing.T, s *stack.Stack, selector string) []string {
	t.Helper()
	pods, err := s.Client.CoreV1().Pods(systemNS).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + release + "," + selector})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		out = append(out, p.Name)
	}
	return out
}

func serviceIP(t *testing.T, s *stack.Stack, name string) string {
	t.Helper()
	svc, err := s.Client.CoreV1().Services(systemNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc.Spec.ClusterIP
}

func waitGone(t *testing.T, s *stack.Stack, pods []string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("pods %v gone", pods), func() error {
		for _, p := range pods {
			if _, err := s.Client.CoreV1().Pods(systemNS).Get(context.Background(), p, metav1.GetOptions{}); err == nil {
				return fmt.Errorf("%s still there", p)
			}
		}
		return nil
	})
}

// deletionTook is how long pod lasted from its deletion to its end, or 0.
func deletionTook(s *stack.Stack, pod string, timeout time.Duration) time.Duration {
	var deleted time.Time
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		p, err := s.Client.CoreV1().Pods(systemNS).Get(context.Background(), pod, metav1.GetOptions{})
		switch {
		case err != nil && !deleted.IsZero():
			return time.Since(deleted)
		case err == nil && p.DeletionTimestamp != nil && deleted.IsZero():
			deleted = time.Now() // deletionTimestamp itself is the grace period's end
		}
	}
	return 0
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := workload.Poll(context.Background(), timeout, f); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func assertServed(t *testing.T, gateway string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	eventually(t, 30*time.Second, "hello served after the upgrade", func() error { return get(c, gateway) })
}

func get(c *http.Client, gateway string) error {
	req, _ := http.NewRequest(http.MethodGet, "http://"+gateway+"/", nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), `"name":"hello"`) {
		return fmt.Errorf("%d %s", resp.StatusCode, strings.TrimSpace(b.String()))
	}
	return nil
}

// load sends requests to the gateway from four clients until stopped; one
// of them opens a new connection for every request.
type load struct {
	total, failed atomic.Int64
	first         atomic.Value
	done          chan struct{}
	wg            sync.WaitGroup
}

func startLoad(gateway string) *load {
	l := &load{done: make(chan struct{})}
	for i := range 4 {
		tr := &http.Transport{DisableKeepAlives: i == 0}
		c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
		l.wg.Go(func() {
			for {
				select {
				case <-l.done:
					return
				default:
				}
				l.total.Add(1)
				if err := get(c, gateway); err != nil {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return l
}

func (l *load) stop() (total, failed int64, first any) {
	close(l.done)
	l.wg.Wait()
	return l.total.Load(), l.failed.Load(), l.first.Load()
}

// leftovers lists every object, of every kind the API server serves, that
// carries the release's instance label or a name of the chart's in the
// release namespace (or cluster-wide).
func leftovers(t *testing.T, s *stack.Stack) []string {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(s.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(s.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := dc.ServerPreferredResources()
	if err != nil {
		t.Logf("discovery (partial): %v", err)
	}
	var out []string
	kinds := 0
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if !strings.Contains(strings.Join(r.Verbs, ","), "list") || r.Name == "events" || gv.Group == "events.k8s.io" {
				continue
			}
			kinds++
			ri := dyn.Resource(gv.WithResource(r.Name))
			var objs []string
			if r.Namespaced {
				items, err := ri.Namespace(systemNS).List(context.Background(), metav1.ListOptions{})
				if err != nil {
					t.Logf("list %s: %v", r.Name, err)
					continue
				}
				for _, it := range items.Items {
					if it.GetLabels()["app.kubernetes.io/instance"] == release || strings.HasPrefix(it.GetName(), release+"-") {
						objs = append(objs, it.GetName())
					}
				}
			} else {
				items, err := ri.List(context.Background(), metav1.ListOptions{})
				if err != nil {
					t.Logf("list %s: %v", r.Name, err)
					continue
				}
				for _, it := range items.Items {
					// Not sluice-node: the stack's.
					n := it.GetName()
					if it.GetLabels()["app.kubernetes.io/instance"] == release || strings.HasPrefix(n, release+"-controller") || strings.HasPrefix(n, release+"-gateway") {
						objs = append(objs, n)
					}
				}
			}
			for _, o := range objs {
				out = append(out, r.Name+"."+gv.Group+" "+o)
			}
		}
	}
	t.Logf("looked for leftovers in %d kinds of object", kinds)
	if kinds < 30 {
		t.Errorf("only %d kinds listed", kinds)
	}
	return out
}

// process is one process of the chart's pods.
type process struct{ uid, name string }

// processes lists, by pid, every process run from the image's binary or
// Envoy's. The pod runner shows an image's binary at /ko-app/<name> in the
// container's mount namespace, which is what /proc/PID/exe says.
func processes() (map[int]process, error) {
	names := map[string]bool{"sluice-from-image": true, "envoy": true}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[int]process{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || !names[filepath.Base(exe)] {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		uid := ""
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
				uid = f[1]
			}
		}
		out[pid] = process{uid: uid, name: filepath.Base(exe)}
	}
	return out, nil
}

func checkProcesses(t *testing.T) {
	t.Helper()
	ps, err := processes()
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for pid, p := range ps {
		kinds[p.name]++
		if p.uid != "65532" {
			t.Errorf("pid %d (%s) runs as uid %s, want 65532 (the chart's securityContext)", pid, p.name, p.uid)
		}
	}
	if kinds["sluice-from-image"] != 2 || kinds["envoy"] != 1 {
		t.Errorf("processes of the chart's pods: %v; want 2 controllers from the image and 1 Envoy", kinds)
	}
}

func checkNoProcesses() error {
	ps, err := processes()
	if err != nil {
		return err
	}
	if len(ps) > 0 {
		return fmt.Errorf("processes left: %v", ps)
	}
	return nil
}
