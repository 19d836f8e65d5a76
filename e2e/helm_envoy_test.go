//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
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
	"testing"
	"time"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"sigs.k8s.io/yaml"

	"sluice.dev/sluice/e2e/stack"
)

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
	if st.Options().XDSTLS {
		// The chart's certificates are for the cluster's names and live
		// at xdsTLSDir: here the Envoy gets the stack's.
		mapAt(boot, "static_resources", "clusters", "0")["transport_socket"] = stackXDSTransportSocket(t)
	}
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
	done, _ := startUntilCleanup(t, exec.Command(filepath.Join(root, "bin", "envoy"), args...), "envoy")

	eventually(t, 60*time.Second, "the chart's Envoy to be ready", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("envoy exited: %v", err)
		default:
		}
		return ok(&http.Client{Timeout: 3 * time.Second}, "http://"+adminAddr+"/ready")
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

// stackXDSTransportSocket is what `sluice bootstrap` gives an Envoy of the
// stack for xDS over mutual TLS.
func stackXDSTransportSocket(t *testing.T) any {
	t.Helper()
	f := st.XDSTLSFiles("xds-client")
	out, err := exec.Command(filepath.Join(helmRoot(t), "bin", "sluice"), "bootstrap", "--xds-address", "127.0.0.1:1",
		"--xds-tls-cert", f.Cert, "--xds-tls-key", f.Key, "--xds-tls-ca", f.CA, "--xds-tls-sds-dir", t.TempDir()).Output()
	if err != nil {
		t.Fatal(err)
	}
	var b map[string]any
	if err := yaml.Unmarshal(out, &b); err != nil {
		t.Fatal(err)
	}
	return mapAt(b, "static_resources", "clusters", "0")["transport_socket"]
}
