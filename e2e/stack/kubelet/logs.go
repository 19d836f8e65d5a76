package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The kubelet API, the part the API server proxies for `kubectl logs`:
//
//	GET /containerLogs/<namespace>/<pod>/<container>?follow=&tailLines=&limitBytes=
//
// served over TLS to clients with a certificate of the cluster's CA (the
// API server's kubelet client certificate). The container's log file,
// without the pod runner's own "=== ... sluice kubelet:" lines.

// logMarker starts the pod runner's lines in a container log.
const logMarker = "=== "

func (k *kubelet) serveAPI(ctx context.Context) error {
	c := k.cfg.API
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	caPEM, err := os.ReadFile(c.ClientCAFile)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	lis, err := net.Listen("tcp", c.Address)
	if err != nil {
		return fmt.Errorf("kubelet API: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", k.containerLogs)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			k.log.Error("kubelet API stopped", zap.Error(err))
		}
	}()
	k.log.Info("kubelet API serving container logs", zap.String("address", c.Address))
	return nil
}

func (k *kubelet) containerLogs(w http.ResponseWriter, r *http.Request) {
	ns, pod, ctr := r.PathValue("ns"), r.PathValue("pod"), r.PathValue("container")
	for _, s := range []string{ns, pod, ctr} {
		// Names are DNS labels: none can reach another file.
		if s == "" || strings.ContainsAny(s, "/_") || strings.Contains(s, "..") {
			http.Error(w, "bad name", http.StatusBadRequest)
			return
		}
	}
	path := filepath.Join(k.cfg.LogDir, fmt.Sprintf("%s_%s_%s.log", ns, pod, ctr))
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, fmt.Sprintf("no log of container %s in pod %s/%s", ctr, ns, pod), http.StatusNotFound)
		return
	}
	defer f.Close()
	q := r.URL.Query()
	tail, _ := strconv.Atoi(q.Get("tailLines"))
	limit, _ := strconv.ParseInt(q.Get("limitBytes"), 10, 64)
	follow := q.Get("follow") == "true"
	w.Header().Set("Content-Type", "text/plain")
	out := io.Writer(w)
	if limit > 0 {
		out = &limitWriter{w: w, n: limit}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	lines := containerLines(b)
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for _, l := range lines {
		if _, err := out.Write(l); err != nil {
			return
		}
	}
	if !follow {
		return
	}
	// Follow: new lines as they come, until the client goes or the pod
	// is gone.
	rd := bufio.NewReader(f)
	var partial []byte
	for {
		line, err := rd.ReadBytes('\n')
		partial = append(partial, line...)
		if err == nil {
			if !bytes.HasPrefix(partial, []byte(logMarker)) {
				if _, err := out.Write(partial); err != nil {
					return
				}
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
			}
			partial = nil
			continue
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		if !k.running(ns + "/" + pod) {
			return
		}
	}
}

// containerLines splits a log into lines, leaving out the pod runner's.
func containerLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b
		if i >= 0 {
			line, b = b[:i+1], b[i+1:]
		} else {
			b = nil
		}
		if !bytes.HasPrefix(line, []byte(logMarker)) {
			out = append(out, line)
		}
	}
	return out
}

// running reports whether a pod of that key has a worker.
func (k *kubelet) running(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.workers[key]) > 0
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}
