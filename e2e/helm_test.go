//go:build e2e

package e2e

// Tests of the install: the Helm chart in deploy/helm/sluice, the plain
// manifest deploy/sluice.yaml and the image `make image` builds. The chart
// is rendered with bin/helm (hack/build-helm.sh), sent to the stack's API
// server (server-side dry-run, RBAC for real), and its Envoy bootstrap and
// arguments are run against the stack's controller.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	"k8s.io/utils/ptr"

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
	{"monitoring", []string{"metrics.prometheusRule.enabled=true", "metrics.prometheusRule.labels.release=prom",
		"metrics.dashboard.enabled=true"}},
	{"network-policy", []string{"networkPolicy.enabled=true",
		"networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring"}},
	{"single-controller", []string{"controller.replicas=1", "controller.leaderElect=false",
		"controller.podDisruptionBudget.enabled=false"}},
	{"sotw-ports-config", []string{"gateway.sotw=true", "ports.externalHTTP=9080", "ports.externalHTTPS=9443",
		"ports.internalHTTP=9081", "ports.internalHTTPS=9444", "gateway.adminPort=9902", "config.idle-timeout=1m",
		"controller.watchAllSecrets=true", "gateway.concurrency=2", "gateway.xdsAddress=10.0.0.5:18000",
		"controller.extraArgs[0]=--workers=8", "gateway.drainSeconds=10", "gateway.terminationGracePeriodSeconds=20",
		"gateway.maxConnections=1000", "gateway.maxHeapBytes=2000000000"}},
	{"no-overload-bounds", []string{"gateway.maxConnections=0", "gateway.maxHeapBytes=0"}},
	{"heap-bound-only", []string{"gateway.maxConnections=0", "gateway.maxHeapBytes=1000000000"}},
	{"xds-plaintext", []string{"xdsTLS.enabled=false"}},
	{"xds-tls-cert-manager", []string{"xdsTLS.source=cert-manager", "xdsTLS.certManager.issuerRef.name=sluice-ca"}},
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
		{[]string{"gateway.maxHeapBytes=0"}, "gateway.maxConnections needs gateway.maxHeapBytes"},
		{[]string{"xdsTLS.source=vault"}, "xdsTLS.source must be helm or cert-manager"},
		{[]string{"xdsTLS.source=cert-manager"}, "xdsTLS.certManager.issuerRef.name is required"},
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
				if o.GetKind() == "ServiceMonitor" || o.GetKind() == "PrometheusRule" || o.GetKind() == "Certificate" {
					// The stack has no Prometheus Operator or cert-manager
					// CRDs; checkChart looked at their fields.
					continue
				}
				if err := apply(o, true); err != nil {
					t.Errorf("server-side dry-run of %s/%s: %v", o.GetKind(), o.GetName(), err)
				}
			}
		})
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

// startUntilCleanup starts cmd and stops it when t ends (SIGTERM, then a
// kill after 10 s), printing its arguments and output if t failed. The
// channel gets its exit; a reader that only looks puts it back.
func startUntilCleanup(t *testing.T, cmd *exec.Cmd, what string) (chan error, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
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
			t.Logf("%s %q, log:\n%s", what, cmd.Args[1:], logs.String())
		}
	})
	return done, logs
}
