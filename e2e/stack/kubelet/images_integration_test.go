//go:build e2e

package kubelet

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestConformanceImages runs every Knative conformance image with the pod
// shapes the conformance suite uses (all on the same port, default probe
// periods) and checks they become Ready, and that httpproxy reaches a
// "gateway" by the name in its hosts file, pod to pod over the bridge.
func TestConformanceImages(t *testing.T) {
	needRoot(t)
	images := buildImages(t)
	e := startKubelet(t, Config{Images: images, UnreadyProbePeriod: time.Second})
	ctx := context.Background()
	pods := e.client.CoreV1().Pods("serving-tests")

	const port = 8080
	httpProbe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt(port)}}}
	}
	tcpProbe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}}
	mk := func(image string, probe *corev1.Probe, env ...corev1.EnvVar) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: image, Namespace: "serving-tests", UID: types.UID("uid-" + image + "-" + e.suffix)},
			Spec: corev1.PodSpec{NodeName: "node-test", Containers: []corev1.Container{{
				Name: "foo", Image: image,
				Ports:          []corev1.ContainerPort{{ContainerPort: port}},
				Env:            append([]corev1.EnvVar{{Name: "PORT", Value: "8080"}}, env...),
				ReadinessProbe: probe,
			}}},
		}
	}
	// The "gateway" the proxy dials on port 80 is a runtime pod.
	gateway := mk("runtime", httpProbe("/healthz"))
	gateway.Name, gateway.UID = "gateway", "uid-gateway-"+types.UID(e.suffix)
	gateway.Spec.Containers[0].Env[0].Value = "80"
	gateway.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intstr.FromInt(80)
	all := []*corev1.Pod{
		gateway,
		mk("runtime", httpProbe("/healthz")),
		mk("timeout", httpProbe("")),
		mk("wsserver", httpProbe("/"), corev1.EnvVar{Name: "SUFFIX", Value: "abc"}),
		mk("grpc-ping", tcpProbe),
		mk("retry", tcpProbe),
	}
	for _, p := range all {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	podIP := func(name string) string {
		var ip string
		waitFor(t, name+" Ready", 40*time.Second, func() (bool, error) {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			ip = p.Status.PodIP
			return ip != "" && podCondition(p, corev1.PodReady) == corev1.ConditionTrue, nil
		})
		return ip
	}
	gatewayIP := podIP("gateway")

	proxy := mk("httpproxy", nil,
		corev1.EnvVar{Name: "TARGET_HOST", Value: "private.example.test"},
		corev1.EnvVar{Name: "GATEWAY_HOST", Value: gatewayDomain})
	proxy.Spec.HostAliases = []corev1.HostAlias{{IP: gatewayIP, Hostnames: []string{gatewayDomain}}}
	if _, err := pods.Create(ctx, proxy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{}
	for _, p := range append(all[1:], proxy) {
		ips[p.Name] = podIP(p.Name)
	}

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	get := func(name, path string) (int, []byte) {
		t.Helper()
		var code int
		var body []byte
		// The proxy has no readiness probe: it is Ready once started, maybe
		// a moment before it listens.
		waitFor(t, "GET "+name+path, 10*time.Second, func() (bool, error) {
			resp, err := hc.Get("http://" + net.JoinHostPort(ips[name], "8080") + path)
			if err != nil {
				return false, nil
			}
			defer resp.Body.Close()
			code = resp.StatusCode
			body, _ = io.ReadAll(resp.Body)
			return true, nil
		})
		return code, body
	}
	for _, name := range []string{"runtime", "timeout"} {
		if code, body := get(name, "/"); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", name, code, body)
		}
	}
	for _, name := range []string{"grpc-ping", "retry"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ips[name], "8080"), 5*time.Second)
		if err != nil {
			t.Errorf("dial %s: %v", name, err)
		} else {
			c.Close()
		}
	}

	code, body := get("httpproxy", "/")
	var info struct {
		Request struct {
			Host string `json:"host"`
		} `json:"request"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &info) != nil || info.Request.Host != "private.example.test" {
		t.Errorf("through httpproxy: %d %s", code, body)
	}
}
