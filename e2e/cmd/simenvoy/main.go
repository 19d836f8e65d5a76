// Command simenvoy runs simulated Envoys (package e2e/simenvoy) against an
// xDS server, in a process of their own so that their CPU is counted apart
// from the controller's, and answers questions about them over HTTP:
//
//	go run ./e2e/cmd/simenvoy -xds 127.0.0.1:18000 -n 100 -listen 127.0.0.1:18990
//
//	GET  /stats                      the fleet's counters (JSON)
//	POST /expect?type=T&name=N       start timing a resource
//	GET  /held?type=T&name=N[&skip=I] how many clients hold it, the slowest's time
//	POST /freeze?i=I, /thaw?i=I      client I stops (starts again) reading
//	POST /join                       one more client; its index
//	GET  /client?i=I                 its time to ready and bytes since it connected
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"sluice.dev/sluice/e2e/simenvoy"
)

func main() {
	addr := flag.String("xds", "127.0.0.1:18000", "the xDS server")
	n := flag.Int("n", 100, "simulated Envoys")
	sotw := flag.Int("sotw-every", 0, "every k-th client uses state-of-the-world xDS (0: all delta)")
	listen := flag.String("listen", "127.0.0.1:18990", "where to answer questions")
	prefix := flag.String("prefix", "sim", "node id prefix")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f := simenvoy.Start(ctx, simenvoy.Options{Addr: *addr, SotWEvery: *sotw, Prefix: *prefix}, *n)
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	index := func(r *http.Request, name string) (int, error) {
		i, err := strconv.Atoi(r.URL.Query().Get(name))
		if err != nil || i < 0 || i >= f.Stats().Clients {
			return 0, fmt.Errorf("%s: %q is not a client", name, r.URL.Query().Get(name))
		}
		return i, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { reply(w, f.Stats()) })
	mux.HandleFunc("POST /expect", func(w http.ResponseWriter, r *http.Request) {
		f.Expect(r.URL.Query().Get("type"), r.URL.Query().Get("name"))
	})
	mux.HandleFunc("GET /held", func(w http.ResponseWriter, r *http.Request) {
		var skip []int
		if r.URL.Query().Has("skip") {
			i, err := index(r, "skip")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			skip = append(skip, i)
		}
		n, slowest := f.Held(r.URL.Query().Get("type"), r.URL.Query().Get("name"), skip...)
		reply(w, map[string]any{"n": n, "slowest_ms": float64(slowest.Microseconds()) / 1000})
	})
	for _, op := range []struct {
		path string
		do   func(int)
	}{{"POST /freeze", f.Freeze}, {"POST /thaw", f.Thaw}} {
		mux.HandleFunc(op.path, func(w http.ResponseWriter, r *http.Request) {
			i, err := index(r, "i")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			op.do(i)
		})
	}
	mux.HandleFunc("POST /join", func(w http.ResponseWriter, r *http.Request) { reply(w, map[string]int{"i": f.Join()}) })
	mux.HandleFunc("GET /client", func(w http.ResponseWriter, r *http.Request) {
		i, err := index(r, "i")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d, ok := f.ClientReady(i)
		reply(w, map[string]any{"ready": ok, "ready_ms": float64(d.Microseconds()) / 1000, "bytes": f.ClientBytes(i)})
	})
	srv := &http.Server{Addr: *listen, Handler: mux}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "simenvoy:", err)
		os.Exit(1)
	}
}
