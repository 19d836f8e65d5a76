package xdstls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *ca {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &ca{c, k, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// write issues a certificate with serial into dir as tls.crt, tls.key and
// the CA as ca.crt, replacing the files by renames as a Secret volume does.
func (c *ca) write(t *testing.T, dir string, serial int64) Files {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sluice"}, DNSNames: []string{"sluice"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &k.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	f := Files{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")}
	for p, b := range map[string][]byte{
		f.Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		f.Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
		f.CA:   c.pem,
	} {
		if err := os.WriteFile(p+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// Mutual TLS: a client with a certificate from the CA gets through; one
// without a certificate, or with one from another CA, does not; the
// server's certificate rotates without ending an open stream.
func TestMutualTLS(t *testing.T) {
	authority := newCA(t)
	serverFiles := authority.write(t, t.TempDir(), 100)
	certs, err := Load(serverFiles)
	if err != nil {
		t.Fatal(err)
	}
	creds := certs.Server()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(creds))
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()

	check := func(c credentials.TransportCredentials) error {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(c))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	client := func(f Files) credentials.TransportCredentials {
		c, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.Client()
	}
	good := client(authority.write(t, t.TempDir(), 200))
	if err := check(good); err != nil {
		t.Fatalf("a client with a certificate from the CA: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(authority.pem)
	if err := check(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "sluice"})); err == nil {
		t.Error("a client without a certificate got through")
	}
	stranger := client(newCA(t).write(t, t.TempDir(), 300))
	if err := check(stranger); err == nil {
		t.Error("a client with a certificate from another CA got through")
	}

	// An open stream across a rotation of the server's certificate.
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(good))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	watch, err := healthpb.NewHealthClient(cc).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	authority.write(t, filepath.Dir(serverFiles.Cert), 101)
	serial := func() int64 {
		conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "sluice", NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(filepath.Join(filepath.Dir(serverFiles.Cert), "tls.crt"), filepath.Join(filepath.Dir(serverFiles.Cert), "tls.key"))
				return &c, err
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	// The loader looks at the files at most once a second, on a handshake.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		s := serial()
		if s == 101 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the rotation a new handshake got serial %d, want 101", s)
		}
	}
	if cc.GetState().String() != "READY" {
		t.Errorf("the open connection is %v after the rotation", cc.GetState())
	}
	if err := check(good); err != nil {
		t.Errorf("after the rotation: %v", err)
	}
}
