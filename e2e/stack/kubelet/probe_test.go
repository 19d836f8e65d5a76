package kubelet

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The tests use 127.0.0.1 as the "pod IP": loopback only.
func loopbackServer(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return n
}

func TestHTTPProbe(t *testing.T) {
	var gotUA, gotHeader, gotPath, gotHost string
	status := http.StatusOK
	port := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		gotUA, gotHeader, gotPath, gotHost = r.UserAgent(), r.Header.Get("X-Probe"), r.URL.Path, r.Host
		w.WriteHeader(status)
	})
	c := &corev1.Container{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}
	pr := &prober{podIP: "127.0.0.1", container: c}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Path: "healthz", Port: intstr.FromString("http"),
		HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}, {Name: "Host", Value: "probe.test"}},
	}}}
	if err := pr.run(context.Background(), probe); err != nil {
		t.Fatalf("probe failed: %v", err)
	}
	if gotUA != ProbeUserAgent || gotHeader != "yes" || gotPath != "/healthz" || gotHost != "probe.test" {
		t.Errorf("got UA %q header %q path %q host %q", gotUA, gotHeader, gotPath, gotHost)
	}

	status = http.StatusServiceUnavailable
	if err := pr.run(context.Background(), probe); err == nil {
		t.Error("503 counted as success")
	}
	status = http.StatusFound // redirects without Location are fine: < 400
	if err := pr.run(context.Background(), probe); err != nil {
		t.Errorf("302 counted as failure: %v", err)
	}

	// A User-Agent in the probe spec wins.
	status = http.StatusOK
	probe.HTTPGet.HTTPHeaders = []corev1.HTTPHeader{{Name: "User-Agent", Value: "custom"}}
	probe.HTTPGet.Port = intstr.FromInt(port)
	if err := pr.run(context.Background(), probe); err != nil || gotUA != "custom" {
		t.Errorf("custom UA: err %v, got %q", err, gotUA)
	}
}

func TestProbeRefusesOtherHosts(t *testing.T) {
	called := false
	port := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) { called = true })
	pr := &prober{podIP: "127.0.0.2", container: &corev1.Container{}}
	for _, p := range []*corev1.Probe{
		{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Host: "127.0.0.1", Port: intstr.FromInt(port)}}},
		{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: "127.0.0.1", Port: intstr.FromInt(port)}}},
	} {
		if err := pr.run(context.Background(), p); err == nil {
			t.Error("probe to a host other than the pod IP succeeded")
		}
	}
	if called {
		t.Error("probe reached a host other than the pod IP")
	}
}

func TestTCPProbe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	pr := &prober{podIP: "127.0.0.1", container: &corev1.Container{}}
	p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(port)}}}
	if err := pr.run(context.Background(), p); err != nil {
		t.Errorf("open port: %v", err)
	}
	l.Close()
	if err := pr.run(context.Background(), p); err == nil {
		t.Error("closed port counted as success")
	}
	p.TCPSocket.Port = intstr.FromString("missing")
	if err := pr.run(context.Background(), p); err == nil {
		t.Error("unknown named port accepted")
	}
}

func TestProbeThresholds(t *testing.T) {
	s := newProbeState(&corev1.Probe{SuccessThreshold: 2, FailureThreshold: 2}, timeNow(), 0)
	fail, ok := errTest, error(nil)
	steps := []struct {
		err  error
		want probeChange
	}{
		{ok, probeUnchanged}, // 1 of 2 successes
		{ok, probeSucceeded},
		{ok, probeUnchanged},
		{fail, probeUnchanged},
		{ok, probeUnchanged}, // resets the failure count
		{fail, probeUnchanged},
		{fail, probeFailed},
		{fail, probeUnchanged},
		{ok, probeUnchanged},
		{ok, probeSucceeded},
	}
	for i, st := range steps {
		if got := s.observe(st.err, nopLog, "readiness"); got != st.want {
			t.Fatalf("step %d: got %v, want %v", i, got, st.want)
		}
	}
}

func TestUnreadyProbePeriod(t *testing.T) {
	s := newProbeState(&corev1.Probe{PeriodSeconds: 10}, timeNow(), time.Second)
	s.observe(errTest, nopLog, "readiness")
	if d := time.Until(s.next); d > 2*time.Second {
		t.Errorf("unready probe repeats in %s, want about 1s", d)
	}
	s.observe(nil, nopLog, "readiness")
	if d := time.Until(s.next); d < 9*time.Second {
		t.Errorf("ready probe repeats in %s, want its 10s period", d)
	}
	plain := newProbeState(&corev1.Probe{PeriodSeconds: 10}, timeNow(), 0)
	plain.observe(errTest, nopLog, "readiness")
	if d := time.Until(plain.next); d < 9*time.Second {
		t.Errorf("without the option a failing probe repeats in %s, want 10s", d)
	}
}
