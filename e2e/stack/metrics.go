package stack

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Metric reads one unlabelled gauge or counter from controller replica i's
// /metrics, or -1.
func (s *Stack) Metric(i int, name string) int64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.opts.Ports.SluiceAdmin+i))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			var v float64
			if _, err := fmt.Sscan(f[1], &v); err == nil {
				return int64(v)
			}
		}
	}
	return -1
}

// LiveHeap is replica i's heap in use just after a collection (asking
// pprof for the heap with gc=1 runs one; the stack starts controllers
// with --pprof), or -1.
func (s *Stack) LiveHeap(i int) int64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", s.opts.Ports.SluiceAdmin+i))
	if err != nil {
		return -1
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1
	}
	return s.Metric(i, "go_memstats_heap_inuse_bytes")
}
