//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
)

// External authorization through real Envoy, with the e2e backend as the
// authorization service in its own pod (allowing requests that carry
// X-Allow: yes): over gRPC, where the ingress's namespace, name and
// visibility reach it as context, and over HTTP; Knative's hash probe and
// an ACME HTTP-01 challenge pass without asking; a service that cannot be
// reached denies, or lets through with failure mode allow.
func TestExtAuthz(t *testing.T) {
	backend(t, "authzed", 1)
	host := "authzed.sluice-e2e.example.com"
	waitReady(t, createIngress(t, "authzed", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host,
		httpPath("/.well-known/acme-challenge/", split("authzed", 100, nil)),
		httpPath("", split("authzed", 100, nil)))}}))
	service(t, "authzsvc", workload.HTTPPort())
	pod(t, "authzsvc-0", "authzsvc", workload.BackendImage, map[string]string{"NAME": "authzsvc", "AUTHZ_GRPC_PORT": "9000"})
	waitEndpoints(t, "authzsvc", 1)
	p, err := kube.CoreV1().Pods(ns).Get(context.Background(), "authzsvc-0", metav1.GetOptions{})
	if err != nil || p.Status.PodIP == "" {
		t.Fatalf("the authorization pod's address: %v", err)
	}
	ip := p.Status.PodIP

	code := func(path string, header map[string]string) (int, echo) {
		c, e, _ := get(t, host, path, header)
		return c, e
	}
	allowed := map[string]string{"X-Allow": "yes"}
	// guarded checks the service's answers, and that probes and ACME
	// challenges never ask it.
	guarded := func(what string, context string) {
		t.Helper()
		steadily(t, 30*time.Second, what, func() error {
			if c, _ := code("/", nil); c != http.StatusForbidden {
				return fmt.Errorf("without X-Allow: %d", c)
			}
			c, e := code("/", allowed)
			if c != http.StatusOK {
				return fmt.Errorf("with X-Allow: %d", c)
			}
			if got := strings.Join(e.Headers["X-Authz-Context"], ","); got != context {
				return fmt.Errorf("X-Authz-Context %q, want %q", got, context)
			}
			if c, _ := code("/", map[string]string{"K-Network-Hash": "override", "K-Network-Probe": "probe"}); c != http.StatusOK {
				return fmt.Errorf("the hash probe: %d", c)
			}
			if c, _ := code("/.well-known/acme-challenge/token-1", nil); c != http.StatusOK {
				return fmt.Errorf("an ACME challenge: %d", c)
			}
			return nil
		})
	}

	setConfig(t, map[string]string{"ext-authz-address": net.JoinHostPort(ip, "9000")})
	guarded("ext_authz over gRPC", "sluice-e2e/authzed/ExternalIP")

	// The first bytes of a body go along, as a string or as raw bytes.
	post := func() string {
		req, err := http.NewRequest(http.MethodPost, "http://"+host+"/", strings.NewReader("hello world"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Allow", "yes")
		_, e, _ := send(t, client(st.External.HTTP), req)
		return strings.Join(e.Headers["X-Authz-Body"], ",")
	}
	grpcBody := map[string]string{"ext-authz-address": net.JoinHostPort(ip, "9000"), "ext-authz-body-bytes": "5"}
	for _, c := range []struct{ packed, want string }{{"false", `raw "", string "hello"`}, {"true", `raw "hello", string ""`}} {
		grpcBody["ext-authz-pack-as-bytes"] = c.packed
		setConfig(t, grpcBody)
		steadily(t, 30*time.Second, "5 bytes of the body, pack-as-bytes "+c.packed, func() error {
			if got := post(); got != c.want {
				return fmt.Errorf("the service got %s, want %s", got, c.want)
			}
			return nil
		})
	}

	setConfig(t, map[string]string{"ext-authz-address": net.JoinHostPort(ip, "8080"), "ext-authz-protocol": "http",
		"ext-authz-path-prefix": "/authz", "ext-authz-headers": "X-Allow"})
	guarded("ext_authz over HTTP", "") // HTTP services get no context

	// Nothing listens on 9999.
	setConfig(t, map[string]string{"ext-authz-address": net.JoinHostPort(ip, "9999"), "ext-authz-timeout": "500ms"})
	steadily(t, 30*time.Second, "an unreachable service denies", func() error {
		if c, _ := code("/", allowed); c != http.StatusForbidden {
			return fmt.Errorf("%d", c)
		}
		return nil
	})
	setConfig(t, map[string]string{"ext-authz-address": net.JoinHostPort(ip, "9999"), "ext-authz-timeout": "500ms", "ext-authz-failure-mode": "allow"})
	steadily(t, 30*time.Second, "an unreachable service lets through with failure mode allow", func() error {
		if c, _ := code("/", nil); c != http.StatusOK {
			return fmt.Errorf("%d", c)
		}
		return nil
	})

	setConfig(t, map[string]string{})
	steadily(t, 30*time.Second, "no authorization again", func() error {
		if c, _ := code("/", nil); c != http.StatusOK {
			return fmt.Errorf("%d", c)
		}
		return nil
	})
}
