// Package xdstls gives the xDS server, and the replicas' clients of each
// other, mutual TLS from PEM files that may be replaced at any time (a
// Kubernetes Secret volume swaps them at once): each handshake uses what
// the files hold then, so a rotated certificate never drops an open stream.
package xdstls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// Files names a certificate, its key and the CA that signs the other
// side's certificates.
type Files struct{ Cert, Key, CA string }

// Enabled reports whether any file is named; Check wants all three then.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Certs are the files read (and read again when they change) once for
// both sides: the server's and the client's credentials share them.
type Certs struct{ l *loader }

// Load reads f; it fails unless all three files are named and good.
func Load(f Files) (*Certs, error) {
	l, err := newLoader(f)
	if err != nil {
		return nil, err
	}
	return &Certs{l}, nil
}

// Server requires clients to present a certificate signed by the CA.
func (c *Certs) Server() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool, err := c.l.get()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"},
				Certificates: []tls.Certificate{*cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
			}, nil
		},
	})
}

// Client presents the certificate and trusts servers whose chain leads to
// the CA. Replicas dial each other by pod address, which no certificate
// names, so the chain is checked and not the name.
func (c *Certs) Client() credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _, err := c.l.get()
			return cert, err
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool, err := c.l.get()
			if err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, crt := range cs.PeerCertificates[1:] {
				inter.AddCert(crt)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	})
}

// loader reads the files again when they change, checking at most once a
// second.
type loader struct {
	f       Files
	mu      sync.Mutex
	checked time.Time
	stamp   string
	cert    *tls.Certificate
	pool    *x509.CertPool
}

func newLoader(f Files) (*loader, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, fmt.Errorf("xDS TLS needs a certificate, its key and a CA (got cert %q, key %q, CA %q)", f.Cert, f.Key, f.CA)
	}
	l := &loader{f: f}
	if _, _, err := l.get(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *loader) get() (*tls.Certificate, *x509.CertPool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cert != nil && time.Since(l.checked) < time.Second {
		return l.cert, l.pool, nil
	}
	l.checked = time.Now()
	stamp := ""
	for _, p := range []string{l.f.Cert, l.f.Key, l.f.CA} {
		fi, err := os.Stat(p)
		if err != nil {
			return l.keep(err)
		}
		stamp += fmt.Sprintf("%s:%d:%d;", p, fi.ModTime().UnixNano(), fi.Size())
	}
	if stamp == l.stamp {
		return l.cert, l.pool, nil
	}
	cert, err := tls.LoadX509KeyPair(l.f.Cert, l.f.Key)
	if err != nil {
		return l.keep(fmt.Errorf("%s, %s: %w", l.f.Cert, l.f.Key, err))
	}
	ca, err := os.ReadFile(l.f.CA)
	if err != nil {
		return l.keep(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return l.keep(fmt.Errorf("%s: no PEM certificate", l.f.CA))
	}
	l.cert, l.pool, l.stamp = &cert, pool, stamp
	return l.cert, l.pool, nil
}

// keep serves the last good files while new ones are unreadable (a swap in
// progress); without any, the error.
func (l *loader) keep(err error) (*tls.Certificate, *x509.CertPool, error) {
	if l.cert != nil {
		return l.cert, l.pool, nil
	}
	return nil, nil, err
}
