//go:build e2e

package stack

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A pod's response must reach the host when another pod's veth leaves the
// bridge meanwhile, whichever MAC address that veth had. The test plugs in
// a veth with the lowest MAC a port can have before the pod starts (so,
// were the bridge to take its ports' lowest MAC, the pod would learn that
// one for its gateway), and removes it while the pod holds back a
// response. The host has nothing to send then, so no new ARP exchange
// corrects the pod's entry: the likely case of a request through Envoy
// that hung for its 5-minute idle timeout in conformance's update test.
func TestBridgeAddressOutlivesPorts(t *testing.T) {
	ctx, s := startPodStack(t, 3*time.Minute)
	br := s.opts.Bridge
	mac := func() string {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", br, "address"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	want := bridgeMAC(net.ParseIP(s.BridgeIP))
	if got := mac(); got != want {
		t.Fatalf("bridge %s has MAC %s, want %s", br, got, want)
	}

	const low = "sl-lowmac"
	for _, args := range [][]string{
		{"link", "add", low, "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", low + "-p"},
		{"link", "set", low, "master", br},
		{"link", "set", low, "up"},
	} {
		if _, err := run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { _, _ = run("ip", "link", "del", low) }() // gone already when the test passes

	// No probe after the first: the pod runner's probes would make the
	// host ARP for the pod, which corrects the pod's entry too.
	c := runtimeContainer()
	c.Image = "timeout"
	c.ReadinessProbe.PeriodSeconds = 300
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bridge-keeper", Namespace: TestNS},
		Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
	if _, err := s.Client.CoreV1().Pods(TestNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := waitPodReady(ctx, s.Client, pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	get := func(delay time.Duration) error {
		resp, err := hc.Get(fmt.Sprintf("http://%s/?initialTimeout=%d", hostPort(p.Status.PodIP, 8080), delay.Milliseconds()))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	if err := get(0); err != nil {
		t.Fatalf("with the low-MAC port on the bridge, the pod at %s does not answer: %v", p.Status.PodIP, err)
	}

	slow := make(chan error, 1)
	go func() { slow <- get(time.Second) }()
	time.Sleep(300 * time.Millisecond)
	if _, err := run("ip", "link", "del", low); err != nil {
		t.Fatal(err)
	}
	if got := mac(); got != want {
		t.Errorf("the bridge's MAC changed to %s when a port left", got)
	}
	if err := <-slow; err != nil {
		t.Errorf("a response held back while the low-MAC port left never came: %v", err)
	}
}
