package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Profiles are served only when asked for.
func TestPprofOnlyWithFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- serveAdmin(ctx, lis, prometheus.NewRegistry(), func() bool { return true }, on) }()
		want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]
		for _, path := range []string{"/debug/pprof/", "/readyz"} {
			resp, err := http.Get(fmt.Sprintf("http://%s%s", lis.Addr(), path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if path == "/readyz" {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Errorf("pprof %v: GET %s = %d, want %d", on, path, resp.StatusCode, want)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
