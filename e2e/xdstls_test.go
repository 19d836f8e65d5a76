//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"sluice.dev/sluice/internal/xdstls"
)

// xDS over mutual TLS on the stack: a client with the Envoys' certificate
// gets through; without a certificate, in plaintext or with a certificate
// from another CA it does not; the controllers' certificate, then the
// Envoys', are replaced by moving new files in, as a Secret volume's update
// does: new handshakes get the controllers' new one, the Envoys load their
// new one, and no Envoy's stream is dropped.
func TestXDSMutualTLS(t *testing.T) {
	if !st.Options().XDSTLS {
		t.Skip("this stack serves xDS in plaintext (attached to one started without XDSTLS)")
	}
	addr := xdsAddr(0)
	health := func(c credentials.TransportCredentials) error {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(c))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	client := func(f xdstls.Files) credentials.TransportCredentials {
		t.Helper()
		c, err := xdstls.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.Client()
	}
	envoyCreds := client(st.XDSTLSFiles("xds-client"))
	if err := health(envoyCreds); err != nil {
		t.Fatalf("with the Envoys' certificate: %v", err)
	}
	if health(insecure.NewCredentials()) == nil {
		t.Error("a plaintext client got through")
	}
	caPEM, err := os.ReadFile(st.XDSTLSFiles("xds-client").CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	if health(credentials.NewTLS(&tls.Config{RootCAs: pool})) == nil {
		t.Error("a client without a certificate got through")
	}
	other := newCA(t, "another CA")
	crt, key := other.issue(t, "sluice-gateway")
	dir := t.TempDir()
	stranger := xdstls.Files{Cert: dir + "/tls.crt", Key: dir + "/tls.key", CA: st.XDSTLSFiles("xds-client").CA}
	_ = os.WriteFile(stranger.Cert, crt, 0o600)
	_ = os.WriteFile(stranger.Key, key, 0o600)
	if health(client(stranger)) == nil {
		t.Error("a client with a certificate from another CA got through")
	}

	// Rotation: a new server certificate from the stack's CA, moved in.
	before := envoyXDSConnections(t)
	serial := rotateCert(t, "xds-server", x509.ExtKeyUsageServerAuth)
	// The controllers look at the files at most once a second, on a handshake.
	eventually(t, 5*time.Second, "a handshake with the new certificate", func() error {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				f := st.XDSTLSFiles("xds-client")
				c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
				return &c, err
			}})
		if err != nil {
			return err
		}
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != serial {
			return fmt.Errorf("serial %d, want %d", got, serial)
		}
		return nil
	})
	if after := envoyXDSConnections(t); after != before {
		t.Errorf("Envoys' xDS connections made %v before the rotation, %v after: a stream was dropped", before, after)
	}
	if err := health(envoyCreds); err != nil {
		t.Errorf("after the rotation: %v", err)
	}

	// The Envoys' certificate: each loads the new one (its admin /certs
	// lists it) on the stream it has.
	serial = rotateCert(t, "xds-client", x509.ExtKeyUsageClientAuth)
	eventually(t, 30*time.Second, "both Envoys to load their new certificate", func() error {
		for i := 0; i < 2; i++ {
			certs := string(getBody(t, fmt.Sprintf("http://127.0.0.1:%d/certs", st.Options().Ports.EnvoyAdmin+i)))
			if !strings.Contains(certs, fmt.Sprintf("%x", serial)) {
				return fmt.Errorf("envoy-%d's certificates: %s", i, certs)
			}
		}
		return nil
	})
	if after := envoyXDSConnections(t); after != before {
		t.Errorf("Envoys' xDS connections made %v before, %v after their certificate changed: a stream was dropped", before, after)
	}
}

// envoyXDSConnections counts the connections each stack Envoy ever made to
// the controllers.
func envoyXDSConnections(t *testing.T) [2]string {
	t.Helper()
	var out [2]string
	for i := range out {
		out[i] = string(getBody(t, fmt.Sprintf("http://127.0.0.1:%d/stats?filter=^cluster.sluice-xds.upstream_cx_total$", st.Options().Ports.EnvoyAdmin+i)))
	}
	return out
}

// rotateCert issues a new certificate for the stack's xDS files name
// ("xds-server" or "xds-client") from the stack's CA and moves it over the
// old files; it returns its serial.
func rotateCert(t *testing.T, name string, usage x509.ExtKeyUsage) int64 {
	t.Helper()
	f := st.XDSTLSFiles(name)
	read := func(p string) *pem.Block {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		return blk
	}
	caCert, err := x509.ParseCertificate(read(f.CA).Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParseECPrivateKey(read(f.CA[:len(f.CA)-len("crt")] + "key").Bytes)
	if err != nil {
		t.Fatal(err)
	}
	serial := time.Now().UnixNano()
	k := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "sluice"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage, x509.ExtKeyUsageClientAuth}}
	crt, key := certPair(t, tmpl, caCert, k, caKey)
	for p, b := range map[string][]byte{f.Key: key, f.Cert: crt} {
		if err := os.WriteFile(p+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	return serial
}
