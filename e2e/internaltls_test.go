//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/certificates"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
	"sluice.dev/sluice/translator"
)

// System-internal TLS through real Envoy: with config-network's
// system-internal-tls enabled, Envoy speaks TLS 1.3 to port 443 of a
// revision Service (here the e2e backend serving TLS like a queue-proxy,
// with a certificate from a CA made in the test), HTTP/1.1 or HTTP/2 as the
// Service's other port says, trusting the CA of Serving's routing Secret or
// of a trust-bundle ConfigMap; a certificate for another namespace, or a
// CA nobody trusts, fails the request and nothing else; with no CA at all
// the ingress says so in its status.
func TestSystemInternalTLS(t *testing.T) {
	ca, wrong := newCA(t, "e2e routing CA"), newCA(t, "e2e wrong CA")
	mine := certificates.DataPlaneUserSAN(ns)
	tlsBackend := func(name string, first corev1.ServicePort, crt, key []byte) {
		t.Helper()
		service(t, name, first, corev1.ServicePort{Name: "https", Port: 443, TargetPort: intstr.FromInt(8443)})
		pod(t, name+"-0", name, workload.BackendImage, map[string]string{"NAME": name,
			"TLS_PORT": "8443", "TLS_CERT": string(crt), "TLS_KEY": string(key)})
		waitEndpoints(t, name, 1)
	}
	h2c := "kubernetes.io/h2c"
	crt, key := ca.issue(t, mine, certificates.LegacyFakeDnsName)
	tlsBackend("secure", workload.HTTPPort(), crt, key)
	tlsBackend("secure-h2", corev1.ServicePort{Name: "http2", Port: 81, AppProtocol: &h2c, TargetPort: intstr.FromInt(8080)}, crt, key)
	crt, key = ca.issue(t, certificates.DataPlaneUserSAN("elsewhere"))
	tlsBackend("impostor", workload.HTTPPort(), crt, key)
	backend(t, "bystander", 1)

	setNetworkConfig(t, "system-internal-tls", "enabled")
	routing := routingSecret(t, ca.pem)
	host := func(name string) string { return name + ".sluice-e2e.example.com" }
	for _, name := range []string{"secure", "secure-h2", "impostor"} {
		s := split(name, 100, nil)
		s.ServicePort = intstr.FromInt(443)
		createIngress(t, name, v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host(name), httpPath("", s))}})
	}
	createIngress(t, "bystander", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host("bystander"), httpPath("", split("bystander", 100, nil)))}})

	// served checks name answers over TLS with proto, or fails. Each
	// request closes its upstream connection, so each is a new handshake:
	// Envoy keeps connections made under an earlier CA.
	served := func(name, proto string) error {
		c, e, _ := get(t, host(name), "/", map[string]string{"X-Close": "yes"})
		switch {
		case proto == "" && c != http.StatusServiceUnavailable:
			return fmt.Errorf("%s: %d, want 503", name, c)
		case proto == "":
			return nil
		case c != http.StatusOK:
			return fmt.Errorf("%s: %d", name, c)
		case !e.TLS || e.Proto != proto:
			return fmt.Errorf("%s: reached over TLS %v with %s, want TLS with %s", name, e.TLS, e.Proto, proto)
		}
		return nil
	}
	all := func(what string, secure, secureH2, impostor string) {
		t.Helper()
		steadily(t, 30*time.Second, what, func() error {
			for _, err := range []error{served("secure", secure), served("secure-h2", secureH2), served("impostor", impostor)} {
				if err != nil {
					return err
				}
			}
			if c, e, _ := get(t, host("bystander"), "/", nil); c != http.StatusOK || e.TLS {
				return fmt.Errorf("bystander: %d (TLS %v)", c, e.TLS)
			}
			return nil
		})
	}
	all("TLS to the queue-proxies trusting the routing CA", "HTTP/1.1", "HTTP/2.0", "")

	routing.Data["ca.crt"] = wrong.pem
	if _, err := kube.CoreV1().Secrets(stack.SystemNS).Update(context.Background(), routing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	all("a CA nobody issued from: every TLS request fails, nothing else", "", "", "")

	bundle := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-trust", Namespace: stack.SystemNS, Labels: map[string]string{translator.TrustBundleLabel: "true"}},
		Data:       map[string]string{"ca.pem": string(ca.pem)},
	}
	if _, err := kube.CoreV1().ConfigMaps(stack.SystemNS).Create(context.Background(), bundle, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().ConfigMaps(stack.SystemNS).Delete(context.Background(), bundle.Name, metav1.DeleteOptions{})
	})
	all("the right CA from a trust bundle beside the wrong one", "HTTP/1.1", "HTTP/2.0", "")

	// No CA at all: the ingresses needing one say so; the bystander serves.
	_ = kube.CoreV1().ConfigMaps(stack.SystemNS).Delete(context.Background(), bundle.Name, metav1.DeleteOptions{})
	_ = kube.CoreV1().Secrets(stack.SystemNS).Delete(context.Background(), routing.Name, metav1.DeleteOptions{})
	waitReason(t, "secure", translator.ReasonInternalCANotFound)
	steadily(t, 30*time.Second, "the bystander unaffected", func() error {
		if c, _, _ := get(t, host("bystander"), "/", nil); c != http.StatusOK {
			return fmt.Errorf("bystander: %d", c)
		}
		return nil
	})
}

// setNetworkConfig sets one key of config-network until the test ends.
func setNetworkConfig(t *testing.T, key, value string) {
	t.Helper()
	cms := kube.CoreV1().ConfigMaps(stack.SystemNS)
	edit := func(f func(map[string]string)) error {
		cm, err := cms.Get(context.Background(), "config-network", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		f(cm.Data)
		_, err = cms.Update(context.Background(), cm, metav1.UpdateOptions{})
		return err
	}
	if err := edit(func(d map[string]string) { d[key] = value }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = edit(func(d map[string]string) { delete(d, key) }) })
}

// routingSecret makes Serving's routing Secret with caPEM as its ca.crt.
func routingSecret(t *testing.T, caPEM []byte) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: translator.RoutingCertSecret, Namespace: stack.SystemNS},
		Data: map[string][]byte{"ca.crt": caPEM}}
	got, err := kube.CoreV1().Secrets(stack.SystemNS).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Secrets(stack.SystemNS).Delete(context.Background(), s.Name, metav1.DeleteOptions{})
	})
	return got
}

// testCA issues certificates, as Serving's routing CA does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name, Organization: []string{certificates.Organization}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	crt, _ := certPair(t, tmpl, tmpl, k, k)
	b, _ := pem.Decode(crt)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: k, pem: crt}
}

// issue makes a certificate for the DNS names, for servers and clients.
func (ca *testCA) issue(t *testing.T, names ...string) (crtPEM, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return certPair(t, tmpl, ca.cert, newKey(t), ca.key)
}
