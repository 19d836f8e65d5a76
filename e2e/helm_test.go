package e2e

// Tests of the install: the Helm chart in deploy/helm/sluice, the plain
// manifest deploy/sluice.yaml and the image in deploy/Dockerfile. The chart
// is rendered with bin/helm (hack/build-helm.sh), sent to the stack's API
// server (server-side dry-run, RBAC for real), and its Envoy bootstrap and
// arguments are run against the stack's controller.

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"sigs.k8s.io/yaml"

	"sluice.dev/sluice/e2e/stack"
)

const (
	chartDir     = "deploy/helm/sluice"
	manifestPath = "deploy/sluice.yaml"
	// Namespaces the chart tests render into; created on the stack.
	helmDryRunNS = "sluice-helm"
	helmRBACNS   = "sluice-helm-rbac"
)

// chartVariants are the option sets every chart test covers: the defaults
// and each option turned on.
var chartVariants = []struct {
	name string
	set  []string
}{
	{"defaults", nil},
	{"gateway-deployment", []string{"gateway.kind=Deployment", "gateway.replicas=3",
		"gateway.updateStrategy.rollingUpdate.maxSurge=1"}},
	{"gateway-autoscaling", []string{"gateway.kind=Deployment", "gateway.autoscaling.enabled=true",
		"gateway.autoscaling.targetMemoryUtilizationPercentage=70", "gateway.podDisruptionBudget.enabled=true"}},
	{"service-monitor", []string{"metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom",
		"metrics.serviceMonitor.scrapeTimeout=10s"}},
	{"network-policy", []string{"networkPolicy.enabled=true",
		"networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"}},
	{"single-controller", []string{"controller.replicas=1", "controller.leaderElect=false",
		"controller.podDisruptionBudget.enabled=false"}},
	{"sotw-ports-config", []string{"gateway.sotw=true", "ports.externalHTTP=9080", "ports.externalHTTPS=9443",
		"ports.internalHTTP=9081", "ports.internalHTTPS=9444", "gateway.adminPort=9902", "config.idle-timeout=1m",
		"controller.watchAllSecrets=true", "gateway.concurrency=2", "gateway.xdsAddress=10.0.0.5:18000",
		"controller.extraArgs[0]=--workers=8", "gateway.drainSeconds=10", "gateway.terminationGracePeriodSeconds=20"}},
	{"names-and-service-options", []string{"fullnameOverride=edge", "publicService.name=pub-gw", "privateService.name=priv-gw",
		"publicService.externalTrafficPolicy=Local", "publicService.loadBalancerSourceRanges[0]=10.0.0.0/8",
		"publicService.annotations.example\\.com/lb=internal", "controller.clusterDomain=corp.example",
		"imagePullSecrets[0].name=regcred", "controller.image.tag=v9.9.9"}},
	{"existing-service-account", []string{"rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=existing"}},
}

func helmRoot(t *testing.T) string {
	t.Helper()
	root, err := stack.FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// helmBin is bin/helm; the chart tests fail without it rather than skip.
func helmBin(t *testing.T) string {
	t.Helper()
	p := filepath.Join(helmRoot(t), "bin", "helm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing; build it with hack/build-helm.sh", p)
	}
	return p
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	cmd.Dir = helmRoot(t)
	// Keep helm away from any user configuration or cache.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home, "KUBECONFIG=/dev/null")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("helm %s: %v: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.String(), nil
}

func setArgs(set []string) []string {
	var a []string
	for _, s := range set {
		a = append(a, "--set", s)
	}
	return a
}

// render runs helm template and decodes every object.
func helmRender(t *testing.T, release, namespace string, set []string) []*unstructured.Unstructured {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, setArgs(set)...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifest(t, out)
}

func decodeManifest(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding the rendered chart: %v", err)
		}
		if m == nil {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	if len(objs) == 0 {
		t.Fatal("the chart rendered no objects")
	}
	return objs
}

type chart []*unstructured.Unstructured

func (c chart) get(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	if o := c.find(kind, name); o != nil {
		return o
	}
	t.Fatalf("no %s %q in the rendered chart (have %s)", kind, name, c)
	return nil
}

func (c chart) find(kind, name string) *unstructured.Unstructured {
	for _, o := range c {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (c chart) kinds(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range c {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func (c chart) String() string {
	var s []string
	for _, o := range c {
		s = append(s, o.GetKind()+"/"+o.GetName())
	}
	return strings.Join(s, ", ")
}

// values reads the chart's values.yaml with the --set strings applied the
// simple way (dotted paths, scalars only) for the invariants below.
type chartValues map[string]string

func valuesFor(set []string) chartValues {
	v := chartValues{}
	for _, s := range set {
		k, val, _ := strings.Cut(s, "=")
		v[k] = val
	}
	return v
}

func (v chartValues) or(k, def string) string {
	if s, ok := v[k]; ok {
		return s
	}
	return def
}

func field(t *testing.T, o *unstructured.Unstructured, path ...string) any {
	t.Helper()
	var cur any = o.Object
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(c) {
				t.Fatalf("%s/%s: no %v", o.GetKind(), o.GetName(), path)
			}
			cur = c[i]
		default:
			t.Fatalf("%s/%s: no %v", o.GetKind(), o.GetName(), path)
		}
	}
	return cur
}

func fieldStr(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case int64:
		return strconv.FormatInt(x, 10)
	default:
		return fmt.Sprint(x)
	}
}

// container returns the first container of a workload's pod template.
func firstContainer(t *testing.T, o *unstructured.Unstructured) map[string]any {
	t.Helper()
	cs, _ := field(t, o, "spec", "template", "spec", "containers").([]any)
	if len(cs) == 0 {
		t.Fatalf("%s/%s has no containers", o.GetKind(), o.GetName())
	}
	return cs[0].(map[string]any)
}

func strList(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, fieldStr(x))
	}
	return out
}

// flagValue finds --name=value or --name value in args (the last wins, as
// with Go's flag package).
func argFlag(args []string, name string) (string, bool) {
	var val string
	found := false
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			val, found = v, true
		} else if a == "--"+name && i+1 < len(args) {
			val, found = args[i+1], true
		}
	}
	return val, found
}

// servicePorts maps port -> targetPort of a Service.
func servicePorts(t *testing.T, svc *unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range field(t, svc, "spec", "ports").([]any) {
		pm := p.(map[string]any)
		out[fieldStr(pm["port"])] = fieldStr(pm["targetPort"])
	}
	return out
}

func labelsMatch(sel map[string]any, labels map[string]any) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

func TestHelmLint(t *testing.T) {
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"lint", "--strict", chartDir, "--namespace", "knative-serving"}, setArgs(v.set)...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint: %s", out)
			}
		})
	}
}

// TestHelmTemplateRefuses checks the values the chart refuses to render.
func TestHelmTemplateRefuses(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"gateway.kind=StatefulSet"}, "gateway.kind must be DaemonSet or Deployment"},
		{[]string{"gateway.autoscaling.enabled=true"}, "needs gateway.kind=Deployment"},
		{[]string{"gateway.drainSeconds=60", "gateway.terminationGracePeriodSeconds=60"}, "must exceed gateway.drainSeconds"},
		{[]string{"config.external-http-port=80"}, "set listener ports with ports.*"},
		{[]string{"ports.internalHTTP=8080"}, "five different ports"},
		{[]string{"gateway.xdsAddress=no-port"}, "is not host:port"},
		{[]string{"serviceAccount.create=false"}, "serviceAccount.name is required"},
		{[]string{"gateway.kind=Deployment", "gateway.autoscaling.enabled=true", "gateway.autoscaling.targetCPUUtilizationPercentage=0"}, "needs a CPU or memory target"},
	} {
		_, err := runHelm(t, append([]string{"template", "sluice", chartDir}, setArgs(c.set)...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("helm template %v: want an error with %q, got %v", c.set, c.want, err)
		}
	}
}

// TestHelmTemplate renders every variant, checks that the pieces agree with
// each other and with what the values ask for, and sends every object to the
// API server with a server-side dry-run.
func TestHelmTemplate(t *testing.T) {
	ensureNamespace(t, helmDryRunNS)
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(context.Background(), helmDryRunNS, metav1.DeleteOptions{})
	})
	apply := newApplier(t)
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			objs := chart(helmRender(t, "sluice", helmDryRunNS, v.set))
			vals := valuesFor(v.set)
			checkChart(t, objs, vals, helmDryRunNS)
			for _, o := range objs {
				if o.GetKind() == "ServiceMonitor" {
					// The stack has no Prometheus Operator CRDs; checkChart
					// looked at its fields.
					continue
				}
				if err := apply(o, true); err != nil {
					t.Errorf("server-side dry-run of %s/%s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
	}
}

// checkChart checks one rendered variant.
func checkChart(t *testing.T, objs chart, vals chartValues, namespace string) {
	t.Helper()
	full := vals.or("fullnameOverride", "sluice")
	ctrlName, gwName := full+"-controller", full+"-gateway"
	pub, priv := vals.or("publicService.name", "sluice-gateway"), vals.or("privateService.name", "sluice-internal")
	ports := map[string]string{
		"external-http-port": vals.or("ports.externalHTTP", "8080"), "external-https-port": vals.or("ports.externalHTTPS", "8443"),
		"internal-http-port": vals.or("ports.internalHTTP", "8081"), "internal-https-port": vals.or("ports.internalHTTPS", "8444"),
	}
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s/%s is in namespace %q, not the release's %q", o.GetKind(), o.GetName(), ns, namespace)
		}
	}

	// The controller: flags that must agree with the Services and Envoy.
	ctrl := objs.get(t, "Deployment", ctrlName)
	cc := firstContainer(t, ctrl)
	args := strList(cc["args"])
	if args[0] != "controller" {
		t.Errorf("controller args start with %q", args[0])
	}
	wantFlags := map[string]string{
		"public-service": pub, "private-service": priv,
		"leader-elect":      vals.or("controller.leaderElect", "true"),
		"watch-all-secrets": vals.or("controller.watchAllSecrets", "false"),
		"cluster-domain":    vals.or("controller.clusterDomain", "cluster.local"),
		"xds-address":       ":" + vals.or("controller.xdsPort", "18000"),
		"admin-address":     ":" + vals.or("controller.adminPort", "19000"),
		"namespace":         "$(SYSTEM_NAMESPACE)",
		"ingress-class":     "sluice.ingress.networking.knative.dev",
	}
	for k, p := range ports {
		wantFlags[k] = p
	}
	for k, want := range wantFlags {
		if got, _ := argFlag(args, k); got != want {
			t.Errorf("controller --%s = %q, want %q", k, got, want)
		}
	}
	if x, ok := vals["controller.extraArgs[0]"]; ok && args[len(args)-1] != x {
		t.Errorf("controller extra args: last arg is %q, want %q", args[len(args)-1], x)
	}
	if img := fieldStr(cc["image"]); !strings.HasSuffix(img, ":"+vals.or("controller.image.tag", "0.1.0")) {
		t.Errorf("controller image %q", img)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		hg := cc[probe].(map[string]any)["httpGet"].(map[string]any)
		if hg["path"] != path || hg["port"] != "metrics" {
			t.Errorf("controller %s: %v, want %s on port metrics", probe, hg, path)
		}
	}
	if !containerPort(cc, "metrics", vals.or("controller.adminPort", "19000")) || !containerPort(cc, "grpc-xds", vals.or("controller.xdsPort", "18000")) {
		t.Errorf("controller ports: %v", cc["ports"])
	}
	if fieldStr(field(t, ctrl, "spec", "replicas")) != vals.or("controller.replicas", "2") {
		t.Errorf("controller replicas %v", field(t, ctrl, "spec", "replicas"))
	}
	sa := fieldStr(field(t, ctrl, "spec", "template", "spec", "serviceAccountName"))
	if want := vals.or("serviceAccount.name", ctrlName); sa != want {
		t.Errorf("controller serviceAccountName %q, want %q", sa, want)
	}
	ctrlLabels := field(t, ctrl, "spec", "template", "metadata", "labels").(map[string]any)
	ctrlSvc := objs.get(t, "Service", ctrlName)
	if !labelsMatch(field(t, ctrlSvc, "spec", "selector").(map[string]any), ctrlLabels) {
		t.Errorf("the controller Service does not select the controller pods")
	}
	// Several replicas know each other through a headless Service that
	// selects them all.
	peersSvc := objs.find("Service", ctrlName+"-peers")
	peers, hasPeers := argFlag(args, "peers")
	if multi := vals.or("controller.replicas", "2") != "1"; multi {
		want := fmt.Sprintf("%s-peers.$(SYSTEM_NAMESPACE).svc.%s:%s", ctrlName, vals.or("controller.clusterDomain", "cluster.local"), vals.or("controller.xdsPort", "18000"))
		if peers != want {
			t.Errorf("controller --peers = %q, want %q", peers, want)
		}
		if peersSvc == nil || fieldStr(field(t, peersSvc, "spec", "clusterIP")) != "None" ||
			!labelsMatch(field(t, peersSvc, "spec", "selector").(map[string]any), ctrlLabels) {
			t.Errorf("no headless Service %s-peers selecting the controller pods: %v", ctrlName, peersSvc)
		}
	} else if hasPeers || peersSvc != nil {
		t.Errorf("one replica, yet --peers %q and peers Service %v", peers, peersSvc != nil)
	}
	if pdb := objs.find("PodDisruptionBudget", ctrlName); (pdb != nil) != (vals.or("controller.podDisruptionBudget.enabled", "true") == "true") {
		t.Errorf("controller PodDisruptionBudget present: %v", pdb != nil)
	}

	// Envoy.
	kind := vals.or("gateway.kind", "DaemonSet")
	gw := objs.get(t, kind, gwName)
	other := map[string]string{"DaemonSet": "Deployment", "Deployment": "DaemonSet"}[kind]
	if objs.find(other, gwName) != nil {
		t.Errorf("both a %s and a %s for Envoy", kind, other)
	}
	gwLabels := field(t, gw, "spec", "template", "metadata", "labels").(map[string]any)
	if labelsMatch(field(t, ctrlSvc, "spec", "selector").(map[string]any), gwLabels) {
		t.Errorf("the controller Service selects the Envoy pods")
	}
	ec := firstContainer(t, gw)
	eargs := strList(ec["args"])
	if v, _ := argFlag(eargs, "service-node"); v != "$(POD_NAME)" {
		t.Errorf("envoy --service-node %q, want $(POD_NAME)", v)
	}
	if !envFromField(ec, "POD_NAME", "metadata.name") {
		t.Errorf("envoy has no POD_NAME from metadata.name: %v", ec["env"])
	}
	drain := vals.or("gateway.drainSeconds", "30")
	if v, _ := argFlag(eargs, "drain-time-s"); v != drain {
		t.Errorf("envoy --drain-time-s %q, want %s", v, drain)
	}
	if c, ok := vals["gateway.concurrency"]; ok {
		if v, _ := argFlag(eargs, "concurrency"); v != c {
			t.Errorf("envoy --concurrency %q, want %s", v, c)
		}
	}
	hook := strings.Join(strList(field(t, gw, "spec", "template", "spec", "containers", "0", "lifecycle", "preStop", "exec", "command")), " ")
	adminPort := vals.or("gateway.adminPort", "9901")
	for _, want := range []string{"/dev/tcp/127.0.0.1/" + adminPort, "POST /drain_listeners?graceful", "sleep " + drain} {
		if !strings.Contains(hook, want) {
			t.Errorf("preStop %q lacks %q", hook, want)
		}
	}
	grace, _ := strconv.Atoi(fieldStr(field(t, gw, "spec", "template", "spec", "terminationGracePeriodSeconds")))
	if d, _ := strconv.Atoi(drain); grace <= d {
		t.Errorf("terminationGracePeriodSeconds %d <= drain %d", grace, d)
	}
	if field(t, gw, "spec", "template", "spec", "automountServiceAccountToken") != false {
		t.Errorf("the Envoy pods mount a service account token")
	}
	for name, p := range map[string]string{"http": ports["external-http-port"], "https": ports["external-https-port"],
		"http-local": ports["internal-http-port"], "https-local": ports["internal-https-port"]} {
		if !containerPort(ec, name, p) {
			t.Errorf("envoy has no container port %s=%s: %v", name, p, ec["ports"])
		}
	}
	switch {
	case kind == "DaemonSet":
		if _, ok := field(t, gw, "spec").(map[string]any)["replicas"]; ok {
			t.Errorf("a DaemonSet with replicas")
		}
	case vals["gateway.autoscaling.enabled"] == "true":
		if _, ok := field(t, gw, "spec").(map[string]any)["replicas"]; ok {
			t.Errorf("an autoscaled Deployment with fixed replicas")
		}
		hpa := objs.get(t, "HorizontalPodAutoscaler", gwName)
		if fieldStr(field(t, hpa, "spec", "scaleTargetRef", "name")) != gwName || len(field(t, hpa, "spec", "metrics").([]any)) != 2 {
			t.Errorf("HPA: %v", hpa.Object["spec"])
		}
	default:
		if fieldStr(field(t, gw, "spec", "replicas")) != vals.or("gateway.replicas", "2") {
			t.Errorf("Envoy replicas %v", field(t, gw, "spec", "replicas"))
		}
	}
	if (objs.find("HorizontalPodAutoscaler", gwName) != nil) != (vals["gateway.autoscaling.enabled"] == "true") {
		t.Errorf("HPA present when autoscaling is %q", vals["gateway.autoscaling.enabled"])
	}
	if (objs.find("PodDisruptionBudget", gwName) != nil) != (vals["gateway.podDisruptionBudget.enabled"] == "true") {
		t.Errorf("Envoy PodDisruptionBudget present when enabled is %q", vals["gateway.podDisruptionBudget.enabled"])
	}

	// The gateway Services route 80/443 to the listeners and select Envoy.
	for _, s := range []struct{ name, typ, http, https string }{
		{pub, "LoadBalancer", ports["external-http-port"], ports["external-https-port"]},
		{priv, "ClusterIP", ports["internal-http-port"], ports["internal-https-port"]},
	} {
		svc := objs.get(t, "Service", s.name)
		if got := fieldStr(field(t, svc, "spec", "type")); got != s.typ {
			t.Errorf("Service %s type %s, want %s", s.name, got, s.typ)
		}
		if got, want := servicePorts(t, svc), map[string]string{"80": s.http, "443": s.https}; !reflect.DeepEqual(got, want) {
			t.Errorf("Service %s ports %v, want %v", s.name, got, want)
		}
		if !labelsMatch(field(t, svc, "spec", "selector").(map[string]any), gwLabels) || labelsMatch(field(t, svc, "spec", "selector").(map[string]any), ctrlLabels) {
			t.Errorf("Service %s does not select exactly the Envoy pods", s.name)
		}
	}
	if p, ok := vals["publicService.externalTrafficPolicy"]; ok && fieldStr(field(t, objs.get(t, "Service", pub), "spec", "externalTrafficPolicy")) != p {
		t.Errorf("externalTrafficPolicy not passed on")
	}

	// The bootstrap is `sluice bootstrap` with the same settings.
	cm := objs.get(t, "ConfigMap", gwName+"-bootstrap")
	checkBootstrap(t, fieldStr(field(t, cm, "data", "bootstrap.yaml")), vals, ctrlName, namespace, pub, adminPort)
	mounted := false
	for _, vol := range field(t, gw, "spec", "template", "spec", "volumes").([]any) {
		if cmRef, ok := vol.(map[string]any)["configMap"].(map[string]any); ok && cmRef["name"] == cm.GetName() {
			mounted = true
		}
	}
	if path, _ := argFlag(eargs, "config-path"); !mounted || path != "/etc/sluice/bootstrap.yaml" {
		t.Errorf("the bootstrap ConfigMap is not Envoy's --config-path (mounted %v, path %q)", mounted, path)
	}

	// config-sluice only when config is set.
	if c := objs.find("ConfigMap", "config-sluice"); (c != nil) != (vals["config.idle-timeout"] != "") {
		t.Errorf("config-sluice present: %v", c != nil)
	} else if c != nil && fieldStr(field(t, c, "data", "idle-timeout")) != vals["config.idle-timeout"] {
		t.Errorf("config-sluice data %v", c.Object["data"])
	}

	// Optional objects.
	rbac := vals.or("rbac.create", "true") == "true"
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		if (objs.find(kind, ctrlName) != nil) != rbac {
			t.Errorf("%s present with rbac.create=%v", kind, rbac)
		}
	}
	if (objs.find("ServiceAccount", ctrlName) != nil) != (vals.or("serviceAccount.create", "true") == "true") {
		t.Errorf("controller ServiceAccount present with serviceAccount.create=%s", vals.or("serviceAccount.create", "true"))
	}
	if sm := objs.find("ServiceMonitor", ctrlName); (sm != nil) != (vals["metrics.serviceMonitor.enabled"] == "true") {
		t.Errorf("ServiceMonitor present: %v", sm != nil)
	} else if sm != nil {
		ep := field(t, sm, "spec", "endpoints", "0").(map[string]any)
		if ep["port"] != "metrics" || ep["path"] != "/metrics" || fieldStr(ep["scrapeTimeout"]) != vals["metrics.serviceMonitor.scrapeTimeout"] {
			t.Errorf("ServiceMonitor endpoint %v", ep)
		}
		if !labelsMatch(field(t, sm, "spec", "selector", "matchLabels").(map[string]any), field(t, ctrlSvc, "metadata", "labels").(map[string]any)) {
			t.Errorf("the ServiceMonitor does not select the controller Service")
		}
		if sm.GetLabels()["release"] != "prom" {
			t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
		}
	}
	nps := objs.kinds("NetworkPolicy")
	if (len(nps) == 2) != (vals["networkPolicy.enabled"] == "true") || (len(nps) != 0 && len(nps) != 2) {
		t.Errorf("%d NetworkPolicies", len(nps))
	} else if len(nps) == 2 {
		np := objs.get(t, "NetworkPolicy", ctrlName)
		xds := field(t, np, "spec", "ingress", "0").(map[string]any)
		from := xds["from"].([]any)[0].(map[string]any)["podSelector"].(map[string]any)["matchLabels"].(map[string]any)
		if !labelsMatch(from, gwLabels) || labelsMatch(from, ctrlLabels) {
			t.Errorf("the controller NetworkPolicy lets in xDS from %v", from)
		}
		if _, ok := field(t, np, "spec", "ingress", "1").(map[string]any)["from"]; !ok {
			t.Errorf("metricsFrom not passed on")
		}
	}
}

func containerPort(c map[string]any, name, port string) bool {
	for _, p := range c["ports"].([]any) {
		pm := p.(map[string]any)
		if pm["name"] == name && fieldStr(pm["containerPort"]) == port {
			return true
		}
	}
	return false
}

func envFromField(c map[string]any, name, field string) bool {
	for _, e := range c["env"].([]any) {
		em := e.(map[string]any)
		if em["name"] != name {
			continue
		}
		vf, _ := em["valueFrom"].(map[string]any)
		fr, _ := vf["fieldRef"].(map[string]any)
		return fr["fieldPath"] == field
	}
	return false
}

// checkBootstrap compares the chart's bootstrap with `bin/sluice bootstrap`
// run with the settings the chart was given; only node.id may differ.
func checkBootstrap(t *testing.T, got string, vals chartValues, ctrlName, namespace, nodeCluster, adminPort string) {
	t.Helper()
	xds := vals.or("gateway.xdsAddress", fmt.Sprintf("%s.%s.svc.%s:%s", ctrlName, namespace,
		vals.or("controller.clusterDomain", "cluster.local"), vals.or("controller.xdsPort", "18000")))
	args := []string{"bootstrap", "--xds-address", xds, "--node-id", "replaced", "--node-cluster", nodeCluster,
		"--admin-address", "127.0.0.1:" + adminPort}
	if vals["gateway.sotw"] == "true" {
		args = append(args, "--sotw")
	}
	cmd := exec.Command(filepath.Join(helmRoot(t), "bin", "sluice"), args...)
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("sluice %v: %v", args, err)
	}
	var g, w map[string]any
	if err := yaml.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("the chart's bootstrap is not YAML: %v", err)
	}
	if err := yaml.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if id := g["node"].(map[string]any)["id"]; id == "" || id == nil {
		t.Errorf("the chart's bootstrap has no node.id")
	}
	g["node"].(map[string]any)["id"] = "replaced"
	if !reflect.DeepEqual(g, w) {
		gj, _ := json.MarshalIndent(g, "", " ")
		wj, _ := json.MarshalIndent(w, "", " ")
		t.Errorf("the chart's bootstrap differs from `sluice %s`:\nchart:\n%s\nsluice:\n%s", strings.Join(args, " "), gj, wj)
	}
}

// newApplier returns a function that server-side applies an object to the
// stack, as a dry-run or for real, with strict field validation.
func newApplier(t *testing.T) func(o *unstructured.Unstructured, dryRun bool) error {
	t.Helper()
	dyn, err := dynamic.NewForConfig(st.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(st.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	return func(o *unstructured.Unstructured, dryRun bool) error {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return err
		}
		body, err := json.Marshal(o.Object)
		if err != nil {
			return err
		}
		opts := metav1.PatchOptions{FieldManager: "sluice-e2e", Force: ptr.To(true), FieldValidation: "Strict"}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		_, err = ri.Patch(context.Background(), o.GetName(), types.ApplyPatchType, body, opts)
		return err
	}
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ctx := context.Background()
	// A namespace left terminating by an earlier run must go first.
	eventually(t, 60*time.Second, "namespace "+name, func() error {
		n, err := kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
			return err
		}
		if err == nil && n.DeletionTimestamp != nil {
			return fmt.Errorf("still terminating")
		}
		return err
	})
}

// TestHelmRBAC applies the chart's RBAC for real and checks the controller's
// ServiceAccount can do what Sluice needs and nothing more, then runs
// `sluice controller` with that ServiceAccount's token and the chart's flags
// until it is ready and holds the Lease.
func TestHelmRBAC(t *testing.T) {
	ctx := context.Background()
	const release = "sluice-rbac-e2e"
	ensureNamespace(t, helmRBACNS)
	t.Cleanup(func() {
		_ = kube.CoreV1().Namespaces().Delete(ctx, helmRBACNS, metav1.DeleteOptions{})
	})
	objs := chart(helmRender(t, release, helmRBACNS, nil))
	sa := release + "-controller"
	apply := newApplier(t)
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
			if err := apply(o, false); err != nil {
				t.Fatalf("applying %s/%s: %v", o.GetKind(), o.GetName(), err)
			}
		}
	}
	t.Cleanup(func() {
		_ = kube.RbacV1().ClusterRoleBindings().Delete(ctx, sa, metav1.DeleteOptions{})
		_ = kube.RbacV1().ClusterRoles().Delete(ctx, sa, metav1.DeleteOptions{})
	})
	user := "system:serviceaccount:" + helmRBACNS + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + helmRBACNS, "system:authenticated"}

	type check struct {
		verb, group, resource, sub, ns, name string
	}
	const kn, coord, disc = "networking.internal.knative.dev", "coordination.k8s.io", "discovery.k8s.io"
	allowed := []check{
		{"list", kn, "ingresses", "", "", ""},
		{"watch", kn, "ingresses", "", "", ""},
		{"get", kn, "ingresses", "", "some-app", "x"},
		{"update", kn, "ingresses", "status", "some-app", "x"},
		{"list", "", "services", "", "", ""},
		{"watch", "", "services", "", "", ""},
		{"list", disc, "endpointslices", "", "", ""},
		{"watch", disc, "endpointslices", "", "", ""},
		{"list", "", "secrets", "", "", ""},
		{"watch", "", "secrets", "", "", ""},
		{"list", "", "configmaps", "", helmRBACNS, ""},
		{"watch", "", "configmaps", "", helmRBACNS, ""},
		{"create", coord, "leases", "", helmRBACNS, ""},
		{"get", coord, "leases", "", helmRBACNS, "sluice-controller"},
		{"update", coord, "leases", "", helmRBACNS, "sluice-controller"},
	}
	denied := []check{
		{"create", kn, "ingresses", "", "some-app", ""},
		{"update", kn, "ingresses", "", "some-app", "x"},
		{"patch", kn, "ingresses", "", "some-app", "x"},
		{"delete", kn, "ingresses", "", "some-app", "x"},
		{"patch", kn, "ingresses", "status", "some-app", "x"},
		{"get", "", "secrets", "", "some-app", "tls"},
		{"create", "", "secrets", "", "some-app", ""},
		{"update", "", "secrets", "", "some-app", "tls"},
		{"delete", "", "secrets", "", "some-app", "tls"},
		{"get", "", "services", "", "some-app", "x"},
		{"create", "", "services", "", "some-app", ""},
		{"update", "", "services", "", helmRBACNS, "sluice-gateway"},
		{"delete", "", "services", "", "some-app", "x"},
		{"update", disc, "endpointslices", "", "some-app", "x"},
		{"delete", disc, "endpointslices", "", "some-app", "x"},
		{"list", "", "configmaps", "", "", ""},
		{"list", "", "configmaps", "", "knative-serving", ""},
		{"update", "", "configmaps", "", helmRBACNS, "config-sluice"},
		{"create", "", "configmaps", "", helmRBACNS, ""},
		{"get", coord, "leases", "", helmRBACNS, "other-lease"},
		{"update", coord, "leases", "", helmRBACNS, "other-lease"},
		{"delete", coord, "leases", "", helmRBACNS, "sluice-controller"},
		{"create", coord, "leases", "", "kube-system", ""},
		{"list", coord, "leases", "", "", ""},
		{"list", "", "pods", "", "", ""},
		{"list", "", "endpoints", "", "", ""},
		{"create", "", "events", "", helmRBACNS, ""},
		{"create", "", "serviceaccounts", "token", helmRBACNS, sa},
		{"impersonate", "", "serviceaccounts", "", helmRBACNS, ""},
		{"escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", ""},
		{"create", "rbac.authorization.k8s.io", "rolebindings", "", helmRBACNS, ""},
	}
	can := func(c check) (bool, string) {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: c.verb, Group: c.group, Resource: c.resource,
				Subresource: c.sub, Namespace: c.ns, Name: c.name},
		}}
		res, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Status.Allowed, res.Status.Reason
	}
	for _, c := range allowed {
		if ok, why := can(c); !ok {
			t.Errorf("%s cannot %+v: %s", sa, c, why)
		}
	}
	for _, c := range denied {
		if ok, why := can(c); ok {
			t.Errorf("%s can %+v: %s", sa, c, why)
		}
	}

	// With leader election off there is no Lease access at all.
	for _, o := range chart(helmRender(t, release, helmRBACNS, []string{"controller.leaderElect=false"})).kinds("Role") {
		for _, r := range field(t, o, "rules").([]any) {
			if strings.Contains(fmt.Sprint(r), "leases") {
				t.Errorf("leaderElect=false still grants %v", r)
			}
		}
	}

	t.Run("controller runs with it", func(t *testing.T) { runControllerAs(t, objs, sa) })
}

// runControllerAs runs bin/sluice controller with the chart's arguments and a
// token of the ServiceAccount, on free loopback ports and with an ingress
// class no KIngress has (so it never writes status beside the stack's
// controller).
func runControllerAs(t *testing.T, objs chart, sa string) {
	ctx := context.Background()
	tr, err := kube.CoreV1().ServiceAccounts(helmRBACNS).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["stack"] = &clientcmdapi.Cluster{Server: st.RESTConfig.Host, CertificateAuthority: st.RESTConfig.CAFile,
		CertificateAuthorityData: st.RESTConfig.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "stack", AuthInfo: "sa"}
	kc.CurrentContext = "sa"
	kcPath := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kcPath); err != nil {
		t.Fatal(err)
	}

	args := strList(firstContainer(t, objs.get(t, "Deployment", sa))["args"])
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "$(SYSTEM_NAMESPACE)", helmRBACNS)
	}
	admin := freeLoopbackAddr(t)
	args = append(args, "--kubeconfig="+kcPath, "--xds-address="+freeLoopbackAddr(t), "--admin-address="+admin,
		"--ingress-class=helm-rbac-e2e.invalid", "--log-format=console", "--leader-elect=true")
	var logs lockedBuffer
	cmd := exec.Command(filepath.Join(helmRoot(t), "bin", "sluice"), args...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", logs.String())
		}
	}()
	eventually(t, 60*time.Second, "the controller's /readyz with the chart's RBAC", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("the controller exited: %v", err)
		default:
		}
		return getOK("http://" + admin + "/readyz")
	})
	eventually(t, 30*time.Second, "the Lease", func() error {
		l, err := kube.CoordinationV1().Leases(helmRBACNS).Get(ctx, "sluice-controller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})
	if strings.Contains(strings.ToLower(logs.String()), "forbidden") {
		t.Errorf("the controller was refused something:\n%s", logs.String())
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func getOK(url string) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return nil
}

func getBody(t *testing.T, url string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	return b
}

// envoyStats reads counters and gauges from an Envoy admin /stats.
func envoyStats(t *testing.T, admin string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(getBody(t, "http://"+admin+"/stats")))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

type listenerDump struct {
	Name        string          `json:"name"`
	ActiveState json.RawMessage `json:"active_state"`
	ErrorState  json.RawMessage `json:"error_state"`
}

// dynamicListeners reads the dynamic listeners of an Envoy's config dump.
func dynamicListeners(t *testing.T, admin string) []listenerDump {
	t.Helper()
	var dump struct {
		Configs []listenerDump `json:"configs"`
	}
	if err := json.Unmarshal(getBody(t, "http://"+admin+"/config_dump?resource=dynamic_listeners"), &dump); err != nil {
		t.Fatal(err)
	}
	// A listener Sluice removed drains for Envoy's drain time, listed
	// with only a draining_state: it is no longer served, so leave it out.
	var out []listenerDump
	for _, l := range dump.Configs {
		if len(l.ActiveState) > 0 || len(l.ErrorState) > 0 {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func dynamicClusterNames(t *testing.T, admin string) []string {
	t.Helper()
	var dump struct {
		Configs []struct {
			Cluster struct {
				Name string `json:"name"`
			} `json:"cluster"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(getBody(t, "http://"+admin+"/config_dump?resource=dynamic_active_clusters"), &dump); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range dump.Configs {
		out = append(out, c.Cluster.Name)
	}
	sort.Strings(out)
	return out
}

// TestHelmBootstrapConnects runs bin/envoy with the chart's bootstrap (its
// xDS address pointed at the stack's controller) and the chart's Envoy
// arguments, and checks it connects under its --service-node name, accepts
// what the controller sends, and drains when the chart's preStop hook runs.
func TestHelmBootstrapConnects(t *testing.T) {
	root := helmRoot(t)
	adminAddr := freeLoopbackAddr(t)
	_, adminPort, _ := net.SplitHostPort(adminAddr)
	const drain = 2
	objs := chart(helmRender(t, "sluice", stack.SystemNS, []string{"gateway.adminPort=" + adminPort,
		"gateway.drainSeconds=" + strconv.Itoa(drain), "gateway.terminationGracePeriodSeconds=10"}))
	gw := objs.get(t, "DaemonSet", "sluice-gateway")

	// Something to route, so there are clusters and routes to receive.
	const host = "helm-gw.sluice-e2e.example.com"
	backend(t, "helm-gw", 1)
	routeTo := func(header string) v1alpha1.IngressSpec {
		return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			ext(host, httpPath("", split("helm-gw", 100, map[string]string{"Helm-E2e": header}))),
		}}
	}
	createIngress(t, "helm-gw", routeTo("first"))

	var boot map[string]any
	if err := yaml.Unmarshal([]byte(fieldStr(field(t, objs.get(t, "ConfigMap", "sluice-gateway-bootstrap"), "data", "bootstrap.yaml"))), &boot); err != nil {
		t.Fatal(err)
	}
	sock := mapAt(boot, "static_resources", "clusters", "0", "load_assignment", "endpoints", "0", "lb_endpoints", "0",
		"endpoint", "address", "socket_address")
	if sock["address"] != "sluice-controller.knative-serving.svc.cluster.local" {
		t.Fatalf("bootstrap xDS address %v", sock)
	}
	// Only the address changes: the cluster stays STRICT_DNS, as in a cluster.
	sock["address"] = "127.0.0.1"
	sock["port_value"] = st.Options().Ports.XDS
	bootPath := filepath.Join(t.TempDir(), "bootstrap.yaml")
	b, err := yaml.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bootPath, b, 0o644); err != nil {
		t.Fatal(err)
	}

	// The chart's Envoy arguments, with the pod's name and the file's path.
	const podName = "sluice-gateway-helm-e2e"
	var args []string
	for _, a := range strList(firstContainer(t, gw)["args"]) {
		a = strings.ReplaceAll(a, "$(POD_NAME)", podName)
		if a == "/etc/sluice/bootstrap.yaml" {
			a = bootPath
		}
		args = append(args, a)
	}
	// The stack's Envoys use base ids 7300+i; hot restart is off anyway.
	args = append(args, "--base-id", "7390")
	var logs lockedBuffer
	cmd := exec.Command(filepath.Join(root, "bin", "envoy"), args...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("envoy args %q, log:\n%s", args, logs.String())
		}
	})

	eventually(t, 60*time.Second, "the chart's Envoy to be ready", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("envoy exited: %v", err)
		default:
		}
		return getOK("http://" + adminAddr + "/ready")
	})

	var info struct {
		Node struct{ ID, Cluster string } `json:"node"`
	}
	if err := json.Unmarshal(getBody(t, "http://"+adminAddr+"/server_info"), &info); err != nil {
		t.Fatal(err)
	}
	if info.Node.ID != podName || info.Node.Cluster != "sluice-gateway" {
		t.Errorf("node %+v, want id %s (from --service-node), cluster sluice-gateway", info.Node, podName)
	}

	stats := envoyStats(t, adminAddr)
	for k, want := range map[string]int64{"control_plane.connected_state": 1,
		"cluster_manager.cds.update_rejected": 0, "listener_manager.lds.update_rejected": 0} {
		if stats[k] != want {
			t.Errorf("%s = %d, want %d", k, stats[k], want)
		}
	}
	for _, k := range []string{"cluster_manager.cds.update_success", "listener_manager.lds.update_success"} {
		if stats[k] < 1 {
			t.Errorf("%s = %d: no accepted update", k, stats[k])
		}
	}

	// It got what the stack's own Envoy has from the same controller.
	stackAdmin := fmt.Sprintf("127.0.0.1:%d", st.Options().Ports.EnvoyAdmin)
	eventually(t, 10*time.Second, "the same clusters as the stack's Envoy", func() error {
		if got, want := dynamicClusterNames(t, adminAddr), dynamicClusterNames(t, stackAdmin); !reflect.DeepEqual(got, want) {
			return fmt.Errorf("clusters %v, the stack's Envoy has %v", got, want)
		}
		return nil
	})
	ls, stackLs := dynamicListeners(t, adminAddr), dynamicListeners(t, stackAdmin)
	if len(ls) == 0 || len(ls) != len(stackLs) {
		t.Fatalf("%d listeners, the stack's Envoy has %d", len(ls), len(stackLs))
	}
	// Sluice's listeners bind the same ports as the stack's Envoy. Envoy sets
	// SO_REUSEPORT on listeners by default (Linux, same user), so the bind
	// succeeds and the kernel shares connections between the two Envoys
	// while this one runs; both route the same.
	for i, l := range ls {
		if l.Name != stackLs[i].Name {
			t.Errorf("listener %s, the stack's Envoy has %s", l.Name, stackLs[i].Name)
		}
		if len(l.ErrorState) != 0 || len(l.ActiveState) == 0 {
			t.Errorf("listener %s not active: error_state %s", l.Name, l.ErrorState)
		}
	}
	clusters := dynamicClusterNames(t, adminAddr)
	if !strings.Contains(strings.Join(clusters, " "), "helm-gw") {
		t.Errorf("no cluster of the ingress's backend in %v", clusters)
	}

	// It serves: the kernel spreads new connections over both Envoys, and
	// this one's listener counts some of them, all routed to the backend.
	_, httpPort, _ := net.SplitHostPort(st.External.HTTP)
	served := func() int64 {
		var n int64
		for k, v := range envoyStats(t, adminAddr) {
			if strings.HasPrefix(k, "listener.") && strings.HasSuffix(k, "_"+httpPort+".downstream_cx_total") {
				n += v
			}
		}
		return n
	}
	fresh := client(st.External.HTTP)
	fresh.Transport.(*http.Transport).DisableKeepAlives = true
	before := served()
	for i := 0; i < 40; i++ {
		if code, e, _ := do(t, fresh, "http://"+host+"/", nil); code != http.StatusOK || e.Name != "helm-gw" {
			t.Fatalf("request %d: %d from %q", i, code, e.Name)
		}
	}
	if n := served() - before; n == 0 {
		t.Errorf("none of 40 new connections reached the chart's Envoy")
	} else {
		t.Logf("the chart's Envoy %s (%d clusters, %d listeners bound beside the stack's Envoy with SO_REUSEPORT) took %d of 40 connections",
			podName, len(clusters), len(ls), n)
	}

	// Status waits for every connected Envoy, this one included; once the
	// update is Ready this Envoy has the new route.
	updateIngress(t, "helm-gw", routeTo("second"))
	if routes := string(getBody(t, "http://"+adminAddr+"/config_dump?resource=dynamic_route_configs")); !strings.Contains(routes, `"second"`) {
		t.Errorf("the update is Ready but the chart's Envoy does not have it")
	}

	// The chart's preStop hook, as the kubelet would run it: Envoy keeps
	// its listeners through the drain time, then stops every one, so it
	// takes no new connections before SIGTERM.
	hook := strList(field(t, gw, "spec", "template", "spec", "containers", "0", "lifecycle", "preStop", "exec", "command"))
	type result struct {
		out []byte
		err error
	}
	hookDone := make(chan result, 1)
	start := time.Now()
	go func() {
		out, err := exec.Command(hook[0], hook[1:]...).CombinedOutput()
		hookDone <- result{out, err}
	}()
	time.Sleep(drain * time.Second / 2)
	if n := envoyStats(t, adminAddr)["listener_manager.listener_stopped"]; n != 0 {
		t.Errorf("%d listeners stopped %v into a %ds graceful drain", n, time.Since(start), drain)
	}
	r := <-hookDone
	if r.err != nil {
		t.Fatalf("preStop %q: %v: %s", hook, r.err, r.out)
	}
	if !regexp.MustCompile(`^HTTP/1\.1 200`).Match(r.out) {
		t.Errorf("preStop: Envoy answered %q", r.out)
	}
	if d := time.Since(start); d < drain*time.Second {
		t.Errorf("preStop returned after %v, before the %ds drain", d, drain)
	}
	eventually(t, 10*time.Second, "the listeners to stop after the drain", func() error {
		if n := envoyStats(t, adminAddr)["listener_manager.listener_stopped"]; n < int64(len(ls)) {
			return fmt.Errorf("listener_manager.listener_stopped = %d of %d", n, len(ls))
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("envoy exited during the drain: %v", err)
	default:
	}
	// Stopped listeners leave the SO_REUSEPORT group: new connections all go
	// to the stack's Envoy and still succeed.
	before = served()
	for i := 0; i < 20; i++ {
		if code, _, _ := do(t, fresh, "http://"+host+"/", nil); code != http.StatusOK {
			t.Fatalf("request %d after the drain: %d", i, code)
		}
	}
	if n := served() - before; n != 0 {
		t.Errorf("the drained Envoy still took %d new connections", n)
	}
}

func mapAt(m map[string]any, path ...string) map[string]any {
	var cur any = m
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i, _ := strconv.Atoi(p)
			cur = c[i]
		}
	}
	return cur.(map[string]any)
}

// TestHelmManifestUpToDate checks deploy/sluice.yaml is the chart rendered
// with the defaults (deploy/render-manifest.sh writes it).
func TestHelmManifestUpToDate(t *testing.T) {
	root := helmRoot(t)
	cmd := exec.Command(filepath.Join(root, "deploy", "render-manifest.sh"), "-")
	cmd.Env = append(os.Environ(), "HELM="+helmBin(t))
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("deploy/render-manifest.sh: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(root, manifestPath))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with the chart; run deploy/render-manifest.sh", manifestPath)
	}
	// And it is a complete install: it applies (dry-run) to the stack.
	apply := newApplier(t)
	for _, o := range decodeManifest(t, string(got)) {
		if o.GetNamespace() != stack.SystemNS && o.GetNamespace() != "" {
			t.Errorf("%s/%s in namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		if err := apply(o, true); err != nil {
			t.Errorf("server-side dry-run of %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// TestHelmValuesDocumented checks every value in values.yaml is in the
// chart's README (itself or a parent map's entry).
func TestHelmValuesDocumented(t *testing.T) {
	root := helmRoot(t)
	b, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(b, &vals); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			p := strings.TrimPrefix(prefix+"."+k, ".")
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(p, sub)
				continue
			}
			leaves = append(leaves, p)
		}
	}
	walk("", vals)
	if len(leaves) < 50 {
		t.Fatalf("only %d values found", len(leaves))
	}
	for _, l := range leaves {
		documented := false
		for p := l; p != ""; p = p[:max(strings.LastIndex(p, "."), 0)] {
			if bytes.Contains(readme, []byte("| `"+p+"` |")) {
				documented = true
				break
			}
			if !strings.Contains(p, ".") {
				break
			}
		}
		if !documented {
			t.Errorf("value %s is not in %s/README.md", l, chartDir)
		}
	}
}

// TestImageBinaryStatic runs deploy/Dockerfile's `go build` line (Docker
// cannot run here) and checks the binary is static, and that the Dockerfile
// copies every package the binary is built from.
func TestImageBinaryStatic(t *testing.T) {
	root := helmRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var build string
	copied := map[string]bool{}
	for _, line := range strings.Split(string(df), "\n") {
		if s, ok := strings.CutPrefix(line, "RUN "); ok && strings.Contains(s, "go build") {
			build = s
		}
		if f := strings.Fields(line); len(f) == 3 && f[0] == "COPY" && strings.HasSuffix(f[1], "/") {
			copied[strings.TrimSuffix(f[1], "/")] = true
		}
		if strings.HasPrefix(line, "USER ") && (strings.Contains(line, "root") || strings.HasPrefix(line, "USER 0")) {
			t.Errorf("the image runs as root: %s", line)
		}
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(string(df), "\nUSER 65532") {
		t.Fatalf("Dockerfile: want a CGO_ENABLED=0 build and a non-root USER; build line %q", build)
	}
	// The packages of cmd/sluice in this module must all be copied.
	list := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if eq .Module.Path \"sluice.dev/sluice\"}}{{.ImportPath}}{{end}}{{end}}", "./cmd/sluice")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		top := strings.SplitN(strings.TrimPrefix(p, "sluice.dev/sluice/"), "/", 2)[0]
		if !copied[top] {
			t.Errorf("the Dockerfile does not COPY %s/ (needed by %s)", top, p)
		}
	}

	// The build context is cut down to an allowlist; it must keep up.
	ignore, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for dir := range copied {
		if !strings.Contains(string(ignore), "\n!"+dir+"/\n") {
			t.Errorf("deploy/Dockerfile.dockerignore leaves %s/ out of the build context", dir)
		}
	}

	bin := filepath.Join(t.TempDir(), "sluice")
	build = strings.ReplaceAll(build, "/out/sluice", bin)
	build = strings.ReplaceAll(build, "${VERSION}", "e2e")
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", build, err, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static", bin, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v", bin, libs)
	}
	v, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "sluice e2e" {
		t.Errorf("%s version: %q %v", bin, v, err)
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
