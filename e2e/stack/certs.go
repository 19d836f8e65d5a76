package stack

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"time"
)

// pki holds what the control plane needs for TLS and tokens.
type pki struct {
	caPEM      []byte
	adminToken string
	kcmToken   string
}

// writePKI writes a CA, the API server's and the pod runner's serving
// certificates, the API server's client certificate for the pod runner, the
// service account signing key pair and the static token file into dir.
func (s *Stack) writePKI() (*pki, error) {
	dir := s.path("pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice-stack-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)

	// The first address of the service range is the `kubernetes` Service.
	svcIP := mustCIDR(s.opts.ServiceCIDR).IP.To4()
	svcIP = net.IPv4(svcIP[0], svcIP[1], svcIP[2], svcIP[3]+1)
	issue := func(serial int64, cn string, usage []x509.ExtKeyUsage, dns []string, ips ...net.IP) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now, NotAfter: now.Add(10 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			DNSNames: dns, IPAddresses: ips,
		}, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
	}
	serverAuth, clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	files := map[string][]byte{}
	for _, c := range []struct {
		name, cn string
		usage    []x509.ExtKeyUsage
		dns      []string
		ips      []net.IP
	}{
		{"apiserver", "kube-apiserver", serverAuth,
			[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(s.BridgeIP), svcIP}},
		// The pod runner's kubelet API (container logs), and the API
		// server's client certificate for it.
		{"kubelet", NodeName, serverAuth, []string{NodeName}, []net.IP{net.ParseIP(s.BridgeIP)}},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", clientAuth, nil, nil},
		// xDS with mutual TLS (Options.XDSTLS): the controllers serve with
		// the first and present it to each other; Envoys present the second.
		{"xds-server", "sluice", append(serverAuth, clientAuth...), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}},
		{"xds-client", "sluice-gateway", clientAuth, nil, nil},
	} {
		crt, key, err := issue(int64(len(files)+2), c.cn, c.usage, c.dns, c.ips...)
		if err != nil {
			return nil, err
		}
		files[c.name+".crt"], files[c.name+".key"] = crt, key
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	p := &pki{
		caPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		adminToken: randomToken(),
		kcmToken:   randomToken(),
	}
	saPubDER, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	// user name, uid, groups: both are cluster admins; it is a throwaway cluster.
	tokens := fmt.Sprintf("%s,admin,admin,system:masters\n%s,system:kube-controller-manager,kcm,system:masters\n", p.adminToken, p.kcmToken)
	caKeyDER, _ := x509.MarshalECPrivateKey(caKey)
	maps.Copy(files, map[string][]byte{
		"ca.crt": p.caPEM,
		// for tests that issue more (a rotated xDS certificate)
		"ca.key":      pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER}),
		"tokens.csv":  []byte(tokens),
		"admin.token": []byte(p.adminToken),
	})
	for name, b := range files {
		if err := os.WriteFile(s.path("pki", name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
