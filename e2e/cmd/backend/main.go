// Command backend is the e2e tests' upstream: it says who it is and what it
// received, and can be slow, fail, or echo WebSocket messages.
//
//	GET /anything        -> 200 JSON {name, host, path, proto, tls, headers}
//	                        (with X-Close, the connection is closed after)
//	GET /slow?d=10s      -> waits d before the headers
//	GET /status/503      -> that status
//	GET /ws              -> WebSocket echo
//	ANY /authz/...       -> 200 with X-Allow: yes, else 403 (ext_authz over HTTP)
//
// With $AUTHZ_GRPC_PORT it also answers ext_authz over gRPC there (see
// authz.go). With $TLS_PORT it also serves all of this over TLS 1.3 there,
// HTTP/1.1 or HTTP/2 by ALPN, as a queue-proxy does with system-internal
// TLS: the certificate and key are PEM in $TLS_CERT and $TLS_KEY.
//
// It listens on $PORT (default 8080) and names itself $NAME (default the
// hostname).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

type reply struct {
	Name    string              `json:"name"`
	Host    string              `json:"host"`
	Path    string              `json:"path"`
	Proto   string              `json:"proto"`
	TLS     bool                `json:"tls"`
	Headers map[string][]string `json:"headers"`
	Count   int64               `json:"count"`
}

func main() {
	name := os.Getenv("NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	var count atomic.Int64
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			t, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(t, append([]byte(name+":"), m...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/authz/", authzHTTP)
	if p := os.Getenv("AUTHZ_GRPC_PORT"); p != "" {
		go serveAuthzGRPC(p)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		n := count.Add(1)
		if strings.HasPrefix(r.URL.Path, "/slow") {
			d, err := time.ParseDuration(r.URL.Query().Get("d"))
			if err == nil {
				time.Sleep(d)
			}
		}
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			if code, err := strconv.Atoi(rest); err == nil && code >= 200 && code < 600 {
				w.WriteHeader(code)
				_, _ = w.Write([]byte(name + "\n"))
				return
			}
		}
		if r.Header.Get("X-Close") != "" {
			// a new connection for the next request (HTTP/2: GOAWAY)
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", name)
		_ = json.NewEncoder(w).Encode(reply{Name: name, Host: r.Host, Path: r.URL.RequestURI(), Proto: r.Proto, TLS: r.TLS != nil, Headers: r.Header, Count: n})
	})
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	// Like a Knative queue-proxy: on SIGTERM keep serving while the
	// endpoint removal reaches the gateways, then drain.
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		drain, err := time.ParseDuration(os.Getenv("DRAIN"))
		if err != nil {
			drain = 3 * time.Second
		}
		log.Printf("terminating: serving %v more, then draining", drain)
		time.Sleep(drain)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if p := os.Getenv("TLS_PORT"); p != "" {
		go serveTLS(p, mux)
	}
	log.Printf("backend %s listening on :%s", name, port)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func serveTLS(port string, h http.Handler) {
	cert, err := tls.X509KeyPair([]byte(os.Getenv("TLS_CERT")), []byte(os.Getenv("TLS_KEY")))
	if err != nil {
		log.Fatalf("TLS_CERT, TLS_KEY: %v", err)
	}
	srv := &http.Server{Addr: ":" + port, Handler: h, ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}}
	log.Printf("serving TLS on :%s", port)
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
