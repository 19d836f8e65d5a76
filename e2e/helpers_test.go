//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
)

// backend starts replicas pods of the e2e backend behind a Service named
// name (port 80, "http", to 8080) and waits until all are endpoints.
func backend(t *testing.T, name string, replicas int) {
	t.Helper()
	service(t, name, workload.HTTPPort())
	for i := 0; i < replicas; i++ {
		pod(t, fmt.Sprintf("%s-%d", name, i), name, workload.BackendImage, map[string]string{"NAME": name})
	}
	waitEndpoints(t, name, replicas)
}

// service creates a Service selecting app=name.
func service(t *testing.T, name string, ports ...corev1.ServicePort) {
	t.Helper()
	if err := workload.Service(context.Background(), kube, ns, name, ports...); err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// pod runs one pod labelled app=app (see workload.Pod).
func pod(t *testing.T, podName, app, image string, env map[string]string) {
	t.Helper()
	if err := workload.Pod(context.Background(), kube, ns, podName, app, image, env); err != nil {
		t.Fatalf("pod %s: %v", podName, err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = kube.CoreV1().Pods(ns).Delete(context.Background(), podName, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
}

// waitEndpoints waits until the Service has exactly n ready endpoints.
func waitEndpoints(t *testing.T, svc string, n int) {
	t.Helper()
	if err := workload.WaitEndpoints(context.Background(), kube, ns, svc, n, 90*time.Second); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := workload.Poll(context.Background(), timeout, f); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Spec builders, shaped like what Knative Serving generates.

func split(svc string, percent int, headers map[string]string) v1alpha1.IngressBackendSplit {
	return v1alpha1.IngressBackendSplit{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: svc, ServicePort: intstr.FromInt(80)},
		Percent:        percent,
		AppendHeaders:  headers,
	}
}

func httpPath(prefix string, splits ...v1alpha1.IngressBackendSplit) v1alpha1.HTTPIngressPath {
	return v1alpha1.HTTPIngressPath{Path: prefix, Splits: splits}
}

func rule(vis v1alpha1.IngressVisibility, hosts []string, paths ...v1alpha1.HTTPIngressPath) v1alpha1.IngressRule {
	return v1alpha1.IngressRule{Hosts: hosts, Visibility: vis, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}}
}

func ext(host string, paths ...v1alpha1.HTTPIngressPath) v1alpha1.IngressRule {
	return rule(v1alpha1.IngressVisibilityExternalIP, []string{host}, paths...)
}

// createIngress creates a KIngress of our class and waits until Ready.
func createIngress(t *testing.T, name string, spec v1alpha1.IngressSpec) *v1alpha1.Ingress {
	t.Helper()
	got, err := kn.NetworkingV1alpha1().Ingresses(ns).Create(context.Background(), workload.Ingress(ns, name, spec), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ingress %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = kn.NetworkingV1alpha1().Ingresses(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return waitReady(t, got)
}

// updateIngress replaces the spec and waits until the new generation is Ready.
func updateIngress(t *testing.T, name string, spec v1alpha1.IngressSpec) *v1alpha1.Ingress {
	t.Helper()
	var got *v1alpha1.Ingress
	eventually(t, 10*time.Second, "update "+name, func() error {
		cur, err := kn.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Spec = spec
		got, err = kn.NetworkingV1alpha1().Ingresses(ns).Update(context.Background(), cur, metav1.UpdateOptions{})
		return err
	})
	return waitReady(t, got)
}

func waitReady(t *testing.T, ing *v1alpha1.Ingress) *v1alpha1.Ingress {
	t.Helper()
	cur, err := workload.WaitReady(context.Background(), kn, ns, ing.Name, ing.Generation, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

func deleteIngress(t *testing.T, name string) {
	t.Helper()
	err := kn.NetworkingV1alpha1().Ingresses(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// client sends every request to addr whatever the URL's host, like the
// conformance suite's dialer does.
func client(addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificates
			MaxIdleConnsPerHost: 64,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type echo struct {
	Name    string              `json:"name"`
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	Proto   string              `json:"proto"`
	TLS     bool                `json:"tls"`
	Headers map[string][]string `json:"headers"`
}

// get sends GET http://host/path through the external gateway.
func get(t *testing.T, host, path string, header map[string]string) (int, echo, http.Header) {
	t.Helper()
	return do(t, client(st.External.HTTP), "http://"+host+path, header)
}

func do(t *testing.T, c *http.Client, url string, header map[string]string) (int, echo, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	return send(t, c, req)
}

// ok gets url with c and wants a 200; an error carries the body.
func ok(c *http.Client, url string) error {
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

// send sends req, reading the backend's JSON answer if that is what came.
func send(t *testing.T, c *http.Client, req *http.Request) (int, echo, http.Header) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e echo
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("%s %s: bad JSON %q: %v", req.Method, req.URL, body, err)
		}
	}
	return resp.StatusCode, e, resp.Header
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }
