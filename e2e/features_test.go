//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/ingress"
	ping "knative.dev/networking/test/test_images/grpc-ping/proto"
)

// K-Network-Hash: override is replaced with the ingress's hash; any other
// value passes through.
func TestHashProbe(t *testing.T) {
	backend(t, "probe", 1)
	host := "probe.sluice-e2e.example.com"
	ing := createIngress(t, "probe", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("probe", 100, nil)))}})
	sum, err := ingress.ComputeHash(ing)
	if err != nil {
		t.Fatal(err)
	}
	_, e, _ := get(t, host, "/", map[string]string{"K-Network-Hash": "override", "K-Network-Probe": "probe"})
	if got := e.Headers["K-Network-Hash"]; len(got) != 1 || got[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("K-Network-Hash = %v, want the ingress hash %x", got, sum)
	}
	_, e, _ = get(t, host, "/", map[string]string{"K-Network-Hash": "something"})
	if got := e.Headers["K-Network-Hash"]; len(got) != 1 || got[0] != "something" {
		t.Errorf("K-Network-Hash = %v, want it untouched", got)
	}
}

// ClusterLocal hosts answer on the internal gateway only.
func TestClusterLocalVisibility(t *testing.T) {
	backend(t, "local", 1)
	host := "local.sluice-e2e.svc.cluster.local"
	createIngress(t, "local", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{host}, httpPath("", split("local", 100, nil))),
	}})
	if code, e, _ := do(t, client(st.Internal.HTTP), "http://"+host+"/", nil); code != http.StatusOK || e.Name != "local" {
		t.Errorf("internal gateway: %d %q", code, e.Name)
	}
	if code, _, _ := get(t, host, "/", nil); code != http.StatusNotFound {
		t.Errorf("external gateway answered %d for a cluster-local host, want 404", code)
	}
}

// httpOption Redirected: plain HTTP on the external gateway answers 301
// to https; the internal gateway still serves.
func TestHTTPRedirect(t *testing.T) {
	backend(t, "redir", 1)
	host := "redir.sluice-e2e.example.com"
	createIngress(t, "redir", v1alpha1.IngressSpec{
		HTTPOption: v1alpha1.HTTPOptionRedirected,
		Rules:      []v1alpha1.IngressRule{ext(host, httpPath("", split("redir", 100, nil)))},
	})
	code, _, h := get(t, host, "/x?y=1", nil)
	if code != http.StatusMovedPermanently || !strings.HasPrefix(h.Get("Location"), "https://"+host+"/x?y=1") {
		t.Errorf("got %d Location %q, want 301 to https://%s/x?y=1", code, h.Get("Location"), host)
	}
	if code, _, _ := do(t, client(st.Internal.HTTP), "http://"+host+"/", nil); code != http.StatusOK {
		t.Errorf("internal gateway: %d", code)
	}
}

// ACME HTTP-01 under Redirected, shaped as Serving merges it: the
// challenge path is answered over plain HTTP by the solver, as the
// KIngress says; the rest of the host, and other tokens, get the 301.
func TestACMEChallengeUnderRedirect(t *testing.T) {
	backend(t, "acme-app", 1)
	backend(t, "acme-solver", 1)
	host := "acme.sluice-e2e.example.com"
	token := "/.well-known/acme-challenge/Xk9dQ2mTzLr0wVbN"
	createIngress(t, "acme", v1alpha1.IngressSpec{
		HTTPOption: v1alpha1.HTTPOptionRedirected,
		Rules: []v1alpha1.IngressRule{ext(host,
			httpPath(token, split("acme-solver", 100, nil)),
			httpPath("", split("acme-app", 100, nil)))},
	})
	if code, e, _ := get(t, host, token, nil); code != http.StatusOK || e.Name != "acme-solver" || e.Path != token {
		t.Errorf("GET %s over HTTP: %d from %q for %q, want 200 from the solver", token, code, e.Name, e.Path)
	}
	for _, path := range []string{"/", "/.well-known/acme-challenge/other"} {
		code, _, h := get(t, host, path, nil)
		if code != http.StatusMovedPermanently || h.Get("Location") != "https://"+host+path {
			t.Errorf("GET %s over HTTP: %d Location %q, want 301 to https://%s%s", path, code, h.Get("Location"), host, path)
		}
	}
}

// No route timeout: a backend that takes 11 s before its headers succeeds.
func TestNoTimeout(t *testing.T) {
	t.Parallel()
	backend(t, "slow", 1)
	host := "slow.sluice-e2e.example.com"
	createIngress(t, "slow", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("slow", 100, nil)))}})
	start := time.Now()
	code, _, _ := get(t, host, "/slow?d=11s", nil)
	if code != http.StatusOK || time.Since(start) < 11*time.Second {
		t.Errorf("slow request: %d after %v", code, time.Since(start))
	}
}

// No retries: a backend's 503 reaches the client, and the backend saw the
// request exactly once.
func TestNoRetry(t *testing.T) {
	backend(t, "fail", 1)
	host := "fail.sluice-e2e.example.com"
	createIngress(t, "fail", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("fail", 100, nil)))}})
	before := count(t, host)
	if code, _, _ := get(t, host, "/status/503", nil); code != http.StatusServiceUnavailable {
		t.Errorf("got %d, want the backend's 503", code)
	}
	if after := count(t, host); after != before+2 {
		t.Errorf("backend saw %d requests for one 503 and one count, want 2 (no retry)", after-before)
	}
}

func count(t *testing.T, host string) int {
	t.Helper()
	resp, err := client(st.External.HTTP).Get("http://" + host + "/count")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Count int }
	if err := jsonDecode(resp, &e); err != nil {
		t.Fatal(err)
	}
	return e.Count
}

// WebSockets upgrade through the gateway on a split route.
func TestWebSocket(t *testing.T) {
	backend(t, "ws", 1)
	host := "ws.sluice-e2e.example.com"
	createIngress(t, "ws", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("ws", 100, nil)))}})
	d := websocket.Dialer{NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, st.External.HTTP) }}
	c, resp, err := d.Dial("ws://"+host+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("hello %d", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "ws:"+msg {
			t.Errorf("echo = %q", got)
		}
	}
}

// gRPC over h2c, streaming, to a Service port named http2.
func TestGRPC(t *testing.T) {
	name := "grpc"
	service(t, name, corev1.ServicePort{Name: "http2", Port: 81, TargetPort: intstr.FromInt(8080)})
	pod(t, name+"-0", name, "grpc-ping", map[string]string{"SUFFIX": "-pong"})
	waitEndpoints(t, name, 1)
	host := "grpc.sluice-e2e.example.com"
	s := split(name, 100, nil)
	s.ServicePort = intstr.FromInt(81)
	createIngress(t, name, v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", s))}})

	conn, err := grpc.NewClient("passthrough:///"+host+":80",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(host+":80"),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", st.External.HTTP)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := ping.NewPingServiceClient(conn).PingStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		msg := fmt.Sprintf("ping%d", i)
		if err := stream.Send(&ping.Request{Msg: msg}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg != msg+"-pong" {
			t.Errorf("got %q, want %q", resp.Msg, msg+"-pong")
		}
	}
	_ = stream.CloseSend()
}

// TLS: the certificate is chosen by SNI from the ingress's tls entry.
func TestTLSBySNI(t *testing.T) {
	backend(t, "secure", 1)
	host := "secure.sluice-e2e.example.com"
	crt := tlsSecret(t, "secure-cert", host)
	createIngress(t, "secure", v1alpha1.IngressSpec{
		TLS:   []v1alpha1.IngressTLS{{Hosts: []string{host}, SecretName: "secure-cert", SecretNamespace: ns}},
		Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("secure", 100, nil)))},
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	var code int
	eventually(t, 10*time.Second, "TLS handshake with the ingress's certificate", func() error {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, st.External.HTTPS)
			},
			TLSClientConfig: &tls.Config{ServerName: host, RootCAs: pool},
		}}
		resp, err := c.Get("https://" + host + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		code = resp.StatusCode
		return nil
	})
	if code != http.StatusOK {
		t.Errorf("https: %d", code)
	}
}

// tlsSecret makes a Secret name holding a self-signed certificate for
// host, labelled as Knative's certificates are, and returns the
// certificate.
func tlsSecret(t *testing.T, name, host string) []byte {
	t.Helper()
	crt, key := selfSigned(t, host)
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{networking.CertificateUIDLabelKey: "e2e"}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
	if _, err := kube.CoreV1().Secrets(ns).Create(context.Background(), sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return crt
}

func selfSigned(t *testing.T, host string) (crtPEM, keyPEM []byte) {
	t.Helper()
	k := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return certPair(t, tmpl, tmpl, k, k)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certPair signs tmpl (for k) by parent (holding parentKey), both PEM.
func certPair(t *testing.T, tmpl, parent *x509.Certificate, k, parentKey *ecdsa.PrivateKey) (crtPEM, keyPEM []byte) {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// rewriteHost through an ExternalName Service pointing at the private
// gateway reaches a cluster-local host, as Knative's DomainMapping does.
func TestHostRewrite(t *testing.T) {
	backend(t, "target", 1)
	local := "target.sluice-e2e.svc.cluster.local"
	createIngress(t, "target", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{local}, httpPath("", split("target", 100, nil))),
	}})
	extSvc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "rewrite-ext", Namespace: ns},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName,
			ExternalName: "sluice-internal.knative-serving.svc.cluster.local",
			Ports:        []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if _, err := kube.CoreV1().Services(ns).Create(context.Background(), extSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Services(ns).Delete(context.Background(), extSvc.Name, metav1.DeleteOptions{})
	})
	host := "mapped.example.org"
	p := httpPath("", split("rewrite-ext", 100, nil))
	p.RewriteHost = local
	createIngress(t, "rewrite", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, p)}})
	code, e, _ := get(t, host, "/", nil)
	if code != http.StatusOK || e.Name != "target" || e.Host != local {
		t.Errorf("got %d from %q with Host %q, want 200 from target with Host %s", code, e.Name, e.Host, local)
	}
}
