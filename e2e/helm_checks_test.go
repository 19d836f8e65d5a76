//go:build e2e

package e2e

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

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
	tlsOn := vals.or("xdsTLS.enabled", "true") == "true"
	if tlsOn {
		wantFlags["xds-tls-cert"], wantFlags["xds-tls-key"], wantFlags["xds-tls-ca"] = xdsTLSDir+"tls.crt", xdsTLSDir+"tls.key", xdsTLSDir+"ca.crt"
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

	xdsHost := strings.Split(vals.or("gateway.xdsAddress", fmt.Sprintf("%s.%s.svc.%s", ctrlName, namespace, vals.or("controller.clusterDomain", "cluster.local"))), ":")[0]
	checkXDSTLS(t, objs, vals, ctrl, gw, ctrlName+"-xds-tls", gwName+"-xds-tls", xdsHost, tlsOn)

	// The bootstrap is `sluice bootstrap` with the same settings.
	cm := objs.get(t, "ConfigMap", gwName+"-bootstrap")
	sds := map[string]string{}
	for _, name := range []string{"sluice-xds-client.yaml", "sluice-xds-ca.yaml"} {
		if d, ok := cm.Object["data"].(map[string]any)[name].(string); ok {
			sds[name] = d
		}
	}
	checkBootstrap(t, fieldStr(field(t, cm, "data", "bootstrap.yaml")), sds, vals, ctrlName, namespace, pub, adminPort)
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
func checkBootstrap(t *testing.T, got string, sds map[string]string, vals chartValues, ctrlName, namespace, nodeCluster, adminPort string) {
	t.Helper()
	xds := vals.or("gateway.xdsAddress", fmt.Sprintf("%s.%s.svc.%s:%s", ctrlName, namespace,
		vals.or("controller.clusterDomain", "cluster.local"), vals.or("controller.xdsPort", "18000")))
	args := []string{"bootstrap", "--xds-address", xds, "--node-id", "replaced", "--node-cluster", nodeCluster,
		"--admin-address", "127.0.0.1:" + adminPort,
		"--max-connections", vals.or("gateway.maxConnections", "50000"), "--max-heap-bytes", vals.or("gateway.maxHeapBytes", "2684354560")}
	if vals["gateway.sotw"] == "true" {
		args = append(args, "--sotw")
	}
	sdsDir := t.TempDir()
	tlsOn := vals.or("xdsTLS.enabled", "true") == "true"
	if tlsOn {
		// sluice writes the SDS files where it is told; the chart has them
		// in the bootstrap ConfigMap at /etc/sluice.
		args = append(args, "--xds-tls-cert", xdsTLSDir+"tls.crt", "--xds-tls-key", xdsTLSDir+"tls.key", "--xds-tls-ca", xdsTLSDir+"ca.crt",
			"--xds-tls-sds-dir", sdsDir)
		got = strings.ReplaceAll(got, "path: /etc/sluice/", "path: "+sdsDir+"/")
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
	// The report sink names the Envoy by the bootstrap's node id too.
	for _, sink := range g["stats_sinks"].([]any) {
		for _, d := range dig(sink, "typed_config", "resource_detectors").([]any) {
			if attrs, ok := dig(d, "typed_config", "attributes").(map[string]any); ok {
				attrs["sluice.bootstrap.node"] = "replaced"
			}
		}
	}
	if !reflect.DeepEqual(g, w) {
		gj, _ := json.MarshalIndent(g, "", " ")
		wj, _ := json.MarshalIndent(w, "", " ")
		t.Errorf("the chart's bootstrap differs from `sluice %s`:\nchart:\n%s\nsluice:\n%s", strings.Join(args, " "), gj, wj)
	}
	if tlsOn {
		for _, name := range []string{"sluice-xds-client.yaml", "sluice-xds-ca.yaml"} {
			want, err := os.ReadFile(filepath.Join(sdsDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if sds[name] != string(want) {
				t.Errorf("the chart's %s differs from what sluice bootstrap writes:\nchart:\n%s\nsluice:\n%s", name, sds[name], want)
			}
		}
	}
}

// xdsTLSDir is where the chart mounts the xDS certificates.
const xdsTLSDir = "/etc/sluice-tls/"

// checkXDSTLS: with xdsTLS on, both workloads mount their Secret at
// xdsTLSDir, and the Secrets (or cert-manager Certificates) exist: the
// controller's certificate is for the xDS host, the Envoys' for clients,
// one CA signs both.
func checkXDSTLS(t *testing.T, objs chart, vals chartValues, ctrl, gw *unstructured.Unstructured, server, client, host string, on bool) {
	t.Helper()
	for _, c := range []struct {
		w      *unstructured.Unstructured
		secret string
	}{{ctrl, server}, {gw, client}} {
		mounted := false
		vols, _ := c.w.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["volumes"].([]any)
		for _, v := range vols {
			if sec, ok := v.(map[string]any)["secret"].(map[string]any); ok && sec["secretName"] == c.secret {
				mounted = true
			}
		}
		if mounted != on {
			t.Errorf("%s mounts Secret %s: %v, want %v", c.w.GetName(), c.secret, mounted, on)
		}
	}
	if !on {
		return
	}
	if vals.or("xdsTLS.source", "helm") == "cert-manager" {
		for _, name := range []string{server, client} {
			crt := objs.get(t, "Certificate", name)
			if fieldStr(field(t, crt, "spec", "secretName")) != name || fieldStr(field(t, crt, "spec", "issuerRef", "name")) != vals["xdsTLS.certManager.issuerRef.name"] {
				t.Errorf("Certificate %s: %v", name, crt.Object["spec"])
			}
		}
		return
	}
	pool := x509.NewCertPool()
	var certs [2]*x509.Certificate
	for i, name := range []string{server, client} {
		sec := objs.get(t, "Secret", name)
		der := func(key string) []byte {
			b, err := base64.StdEncoding.DecodeString(fieldStr(field(t, sec, "data", key)))
			if err != nil {
				t.Fatalf("Secret %s %s: %v", name, key, err)
			}
			blk, _ := pem.Decode(b)
			if blk == nil {
				t.Fatalf("Secret %s %s: no PEM", name, key)
			}
			return blk.Bytes
		}
		ca, err := x509.ParseCertificate(der("ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(ca)
		if certs[i], err = x509.ParseCertificate(der("tls.crt")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
		t.Errorf("the controller's certificate for %s: %v", host, err)
	}
	if _, err := certs[1].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the Envoys' certificate: %v", err)
	}
}

// dig follows keys through nested maps, nil where one is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
