//go:build e2e

package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// inPodEnv makes the test binary, run as a pod's container, do the checks
// of inPod instead of running tests.
const inPodEnv = "SLUICE_STACK_IN_POD"

func TestMain(m *testing.M) {
	if os.Getenv(inPodEnv) == "1" {
		os.Exit(inPod())
	}
	os.Exit(m.Run())
}

// podReport is what the in-pod checks print, one JSON line.
type podReport struct {
	User         string            // who the API server says we are
	CanListPods  bool              // in our namespace, by our RBAC
	CanListNodes bool              // cluster-wide: must not
	Lookups      map[string]string // name -> addresses, or the error
	ViaService   string            // body of a GET through a Service name
	Files        map[string]string // path -> content, or the error
	Env          map[string]string
	Hostname     string
	Console      bool   // /dev/console exists (it must not)
	MemoryLimit  string // of the container's cgroup, as it sees it
	CgroupWrite  string // the error writing to its cgroup (read-only)
}

// inPod runs inside a pod: the API through the in-cluster config (token,
// CA and namespace from the projected volume, address from
// KUBERNETES_SERVICE_HOST), names through the cluster DNS, a Service
// through its cluster IP, and the volumes.
func inPod() int {
	r := podReport{Lookups: map[string]string{}, Files: map[string]string{}, Env: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cfg, err := rest.InClusterConfig(); err != nil {
		r.User = "no in-cluster config: " + err.Error()
	} else if cs, err := kubernetes.NewForConfig(cfg); err != nil {
		r.User = err.Error()
	} else {
		if rev, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authv1.SelfSubjectReview{}, metav1.CreateOptions{}); err != nil {
			r.User = "self review: " + err.Error()
		} else {
			r.User = rev.Status.UserInfo.Username
		}
		ns, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		_, err := cs.CoreV1().Pods(string(ns)).List(ctx, metav1.ListOptions{})
		r.CanListPods = err == nil
		_, err = cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		r.CanListNodes = err == nil
	}
	for _, name := range strings.Fields(os.Getenv("LOOKUP")) {
		addrs, err := net.DefaultResolver.LookupHost(ctx, name)
		if err != nil {
			r.Lookups[name] = "error: " + err.Error()
		} else {
			r.Lookups[name] = strings.Join(addrs, ",")
		}
	}
	if u := os.Getenv("GET"); u != "" {
		c := &http.Client{Timeout: 5 * time.Second}
		if resp, err := c.Get(u); err != nil {
			r.ViaService = "error: " + err.Error()
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.ViaService = fmt.Sprintf("%d %s", resp.StatusCode, b)
		}
	}
	for _, f := range strings.Fields(os.Getenv("READ")) {
		if b, err := os.ReadFile(f); err != nil {
			r.Files[f] = "error: " + err.Error()
		} else {
			r.Files[f] = string(b)
		}
	}
	for _, k := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "ECHO_SERVICE_HOST"} {
		r.Env[k] = os.Getenv(k)
	}
	r.Hostname, _ = os.Hostname()
	_, err := os.Stat("/dev/console")
	r.Console = err == nil
	r.MemoryLimit = readCgroup("memory/memory.limit_in_bytes", "memory.max")
	for _, f := range []string{"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"} {
		if err := os.WriteFile(f, []byte("1"), 0); err != nil && !os.IsNotExist(err) {
			r.CgroupWrite = err.Error()
		}
	}
	if err := os.WriteFile("/scratch/written", []byte("ok"), 0o644); err != nil {
		r.Files["/scratch/written"] = "write error: " + err.Error()
	}
	b, _ := json.Marshal(r)
	fmt.Println("REPORT " + string(b))
	// Stay up for the preStop hook.
	time.Sleep(time.Hour)
	return 0
}

// readCgroup reads a cgroup file, v1 or v2.
func readCgroup(v1, v2 string) string {
	for _, f := range []string{"/sys/fs/cgroup/" + v1, "/sys/fs/cgroup/" + v2} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// TestClusterServicesForPods runs the test binary as a pod with its own
// ServiceAccount and checks what a pod in a cluster gets: an API identity
// of its own with its RBAC enforced, cluster DNS (Services, headless,
// ExternalName), cluster IPs that reach the endpoints, the service
// variables, volumes (configMap, secret, downwardAPI, emptyDir, projected
// token), its sandbox (host name, /dev, its memory limit in a read-only
// cgroup) and a preStop hook run before it stops.
func TestClusterServicesForPods(t *testing.T) {
	ctx, s := startPodStack(t, 5*time.Minute)
	cs := s.Client
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// An echo Service (ClusterIP, port 80 -> 8080), a headless one and an
	// ExternalName pointing at the first.
	must(cs.CoreV1().Pods(TestNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: TestNS, Labels: map[string]string{"app": "echo"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{runtimeContainer()}},
	}, metav1.CreateOptions{}))
	echo, err := waitPodReady(ctx, cs, "echo")
	if err != nil {
		t.Fatal(err)
	}
	svc := func(name string, mod func(*corev1.ServiceSpec)) *corev1.Service {
		spec := corev1.ServiceSpec{Selector: map[string]string{"app": "echo"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}
		mod(&spec)
		out, err := cs.CoreV1().Services(TestNS).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: TestNS}, Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	clusterIP := svc("echo", func(*corev1.ServiceSpec) {}).Spec.ClusterIP
	svc("echo-headless", func(s *corev1.ServiceSpec) { s.ClusterIP = corev1.ClusterIPNone })
	svc("echo-alias", func(s *corev1.ServiceSpec) {
		*s = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "echo." + TestNS + ".svc.cluster.local"}
	})

	// An identity of its own, allowed to list pods in its namespace only.
	must(cs.CoreV1().ServiceAccounts(TestNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "checker"}}, metav1.CreateOptions{}))
	must(cs.RbacV1().Roles(TestNS).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}}}}, metav1.CreateOptions{}))
	must(cs.RbacV1().RoleBindings(TestNS).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "checker"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "checker", Namespace: TestNS}}}, metav1.CreateOptions{}))
	must(cs.CoreV1().ConfigMaps(TestNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": "hello"}}, metav1.CreateOptions{}))
	must(cs.CoreV1().Secrets(TestNS).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"}, Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{}))

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "prestop")
	names := "kubernetes.default.svc.cluster.local echo echo-headless.serving-tests.svc.cluster.local echo-alias nosuch"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "checker", Namespace: TestNS, Labels: map[string]string{"team": "sluice"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "checker",
			Containers: []corev1.Container{{
				Name: "check", Image: self,
				Env: []corev1.EnvVar{{Name: inPodEnv, Value: "1"}, {Name: "LOOKUP", Value: names}, {Name: "GET", Value: "http://echo/"},
					{Name: "READ", Value: "/etc/cfg/greeting /etc/sec/password /etc/podinfo/labels"}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true},
					{Name: "sec", MountPath: "/etc/sec", ReadOnly: true},
					{Name: "podinfo", MountPath: "/etc/podinfo"},
					{Name: "scratch", MountPath: "/scratch"},
					{Name: "marker", MountPath: "/marker"},
				},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
					Command: []string{"/bin/sh", "-c", "cat /scratch/written > /marker/prestop"}}}},
			}},
			Volumes: []corev1.Volume{
				{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "marker", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Dir(marker)}}},
			},
		},
	}
	must(cs.CoreV1().Pods(TestNS).Create(ctx, pod, metav1.CreateOptions{}))
	var rep podReport
	logf := s.path("logs", "pods", TestNS+"_checker_check.log")
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		b, _ := os.ReadFile(logf)
		for _, line := range strings.Split(string(b), "\n") {
			if j, ok := strings.CutPrefix(line, "REPORT "); ok {
				return true, json.Unmarshal([]byte(j), &rep)
			}
		}
		return false, nil
	})
	if err != nil {
		b, _ := os.ReadFile(logf)
		t.Fatalf("no report from the pod: %v\n%s", err, b)
	}
	t.Logf("report: %+v", rep)

	if want := "system:serviceaccount:" + TestNS + ":checker"; rep.User != want {
		t.Errorf("the pod is %q to the API server, want %q", rep.User, want)
	}
	if !rep.CanListPods || rep.CanListNodes {
		t.Errorf("RBAC: list pods %v (want true), list nodes %v (want false)", rep.CanListPods, rep.CanListNodes)
	}
	api, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLookups := map[string]string{
		"kubernetes.default.svc.cluster.local": api.Spec.ClusterIP,
		"echo":                                 clusterIP, // through the search path
		"echo-headless.serving-tests.svc.cluster.local": echo.Status.PodIP,
		"echo-alias": clusterIP,
	}
	for name, want := range wantLookups {
		if rep.Lookups[name] != want {
			t.Errorf("lookup %s: %q, want %q", name, rep.Lookups[name], want)
		}
	}
	if !strings.HasPrefix(rep.Lookups["nosuch"], "error:") {
		t.Errorf("lookup nosuch: %q, want an error", rep.Lookups["nosuch"])
	}
	if !strings.HasPrefix(rep.ViaService, "200 ") {
		t.Errorf("GET http://echo/ through the cluster IP: %q", rep.ViaService)
	}
	if rep.Env["KUBERNETES_SERVICE_HOST"] != api.Spec.ClusterIP || rep.Env["KUBERNETES_SERVICE_PORT"] != "443" || rep.Env["ECHO_SERVICE_HOST"] != clusterIP {
		t.Errorf("service variables: %v", rep.Env)
	}
	for f, want := range map[string]string{"/etc/cfg/greeting": "hello", "/etc/sec/password": "s3cret", "/etc/podinfo/labels": `team="sluice"`} {
		if rep.Files[f] != want {
			t.Errorf("%s: %q, want %q", f, rep.Files[f], want)
		}
	}
	if rep.Hostname != "checker" || rep.Console {
		t.Errorf("host name %q (want checker), /dev/console present: %v", rep.Hostname, rep.Console)
	}
	if rep.MemoryLimit != "268435456" || !strings.Contains(rep.CgroupWrite, "read-only") {
		t.Errorf("memory limit as the container sees it: %q (want 268435456); writing to its cgroup: %q (want read-only)", rep.MemoryLimit, rep.CgroupWrite)
	}
	if e := rep.Files["/scratch/written"]; e != "" {
		t.Errorf("emptyDir: %s", e)
	}

	// Deleting the pod runs its preStop hook in the container (it reads
	// the emptyDir and writes to the hostPath) before the process stops.
	must(nil, cs.CoreV1().Pods(TestNS).Delete(ctx, "checker", metav1.DeleteOptions{}))
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Pods(TestNS).Get(ctx, "checker", metav1.GetOptions{})
		return err != nil, nil
	})
	if err != nil {
		t.Fatalf("the pod was not deleted: %v", err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "ok" {
		t.Errorf("preStop hook: %q, %v", b, err)
	}
}
