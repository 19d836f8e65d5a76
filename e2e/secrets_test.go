//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/translator"
)

// A broken certificate Secret (a certificate that is not one, a key that
// does not match, then the Secret deleted) takes TLS from its own host only, with a condition saying why;
// a client already talking to another host over TLS keeps its connection,
// never told to close (Envoy does not drain that filter chain).
func TestBadSecretIsolated(t *testing.T) {
	hostA, hostB := "tls-a.sluice-e2e.example.com", "tls-b.sluice-e2e.example.com"
	for _, name := range []string{"tls-a", "tls-b"} {
		backend(t, name, 1)
	}
	crtA := tlsSecret(t, "cert-a", hostA)
	crtB := tlsSecret(t, "cert-b", hostB)
	for _, c := range []struct{ name, host, secret string }{{"tls-a", hostA, "cert-a"}, {"tls-b", hostB, "cert-b"}} {
		createIngress(t, c.name, v1alpha1.IngressSpec{
			TLS:   []v1alpha1.IngressTLS{{Hosts: []string{c.host}, SecretName: c.secret, SecretNamespace: ns}},
			Rules: []v1alpha1.IngressRule{ext(c.host, httpPath("", split(c.name, 100, nil)))},
		})
	}
	tlsClient := func(host string, crt []byte) *http.Client {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(crt)
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, st.External.HTTPS)
			},
			TLSClientConfig: &tls.Config{ServerName: host, RootCAs: pool},
		}}
	}
	// b's one connection, kept from the start.
	b := tlsClient(hostB, crtB)
	first := true
	sameConn := func() error {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+hostB+"/", nil)
		resp, err := b.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body) // else the client closes the connection
		resp.Body.Close()
		switch {
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("%s: %d", hostB, resp.StatusCode)
		case resp.Close:
			return fmt.Errorf("%s: Envoy asked to close the connection (draining)", hostB)
		case !reused && !first:
			return fmt.Errorf("%s: a new connection: the old one was closed", hostB)
		}
		first = false
		return nil
	}
	if err := sameConn(); err != nil {
		t.Fatal(err)
	}
	if err := ok(tlsClient(hostA, crtA), "https://"+hostA+"/"); err != nil {
		t.Fatal(err)
	}

	secrets := kube.CoreV1().Secrets(ns)
	_, otherKey := selfSigned(t, hostA)
	for _, broken := range []struct {
		what     string
		key, val []byte
	}{{"a certificate that is not one", []byte(corev1.TLSCertKey), []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")},
		{"a key that does not match", []byte(corev1.TLSPrivateKeyKey), otherKey}} {
		sec, err := secrets.Get(context.Background(), "cert-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data[corev1.TLSCertKey] = crtA
		sec.Data[string(broken.key)] = broken.val
		if _, err := secrets.Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitReason(t, "tls-a", translator.ReasonSecretInvalid)
		if err := ok(tlsClient(hostA, crtA), "https://"+hostA+"/"); err == nil {
			t.Errorf("%s still served with %s", hostA, broken.what)
		}
		if err := sameConn(); err != nil {
			t.Errorf("after %s for a: %v", broken.what, err)
		}
	}

	if err := secrets.Delete(context.Background(), "cert-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReason(t, "tls-a", translator.ReasonSecretNotFound)
	if err := sameConn(); err != nil {
		t.Errorf("after a's Secret was deleted: %v", err)
	}
}

// waitReason waits until ingress name is not Ready for reason.
func waitReason(t *testing.T, name, reason string) {
	t.Helper()
	eventually(t, 30*time.Second, name+" not Ready for "+reason, func() error {
		ing, err := kn.NetworkingV1alpha1().Ingresses(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c := ing.Status.GetCondition(v1alpha1.IngressConditionReady); c == nil || c.Reason != reason {
			return fmt.Errorf("Ready condition %+v", c)
		}
		return nil
	})
}
