package simenvoy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// BenchmarkStreamMemory is F1 without the stack: the xDS server's heap in
// use per stream in sync, N Serving-shaped KIngresses (SLUICE_N, default
// 1,000) and F simulated delta Envoys (SLUICE_F, default 20) in this
// process. The server's share is read from a heap profile (every sample
// whose stack is not the simulated Envoys'), so the clients' own memory
// is left out; it prints where the server's per-stream bytes are held.
// One Envoy connects first, so what the first costs once (the resources'
// encoding, shared by every stream) is not counted per stream.
//
//	go test -run '^$' -bench StreamMemory -benchtime 1x ./e2e/simenvoy/
func BenchmarkStreamMemory(b *testing.B) {
	n, f := envInt("SLUICE_N", 1000), envInt("SLUICE_F", 20)
	runtime.MemProfileRate = 4096
	s := serve(b, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	within := 20*time.Second + time.Duration(n*f)*time.Millisecond // 220 s at N = 10,000, F = 20: the two cores are shared
	inSync := func(fleet *Fleet, k, want int) {
		waitWithin(b, within, "the fleet ready", func() bool { return fleet.Stats().Ready == k })
		waitWithin(b, within, "the server counting the fleet in sync", func() bool {
			synced, _ := s.srv.Synced(s.srv.Generation())
			return len(synced) == want
		})
	}
	inSync(Start(ctx, Options{Addr: s.addr, Prefix: "first"}, 1), 1, 1)
	before := serverHeap(b)
	inSync(Start(ctx, Options{Addr: s.addr}, f), f, f+1)
	after := serverHeap(b)
	var sites []string
	for site, v := range after {
		if d := v - before[site]; d > 0 && site != total {
			sites = append(sites, fmt.Sprintf("%10.1f KiB  %s", float64(d)/float64(f)/1024, site))
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(sites)))
	b.Logf("N = %d, F = %d: per stream, by where it was allocated:\n%s", n, f, strings.Join(sites[:min(len(sites), 15)], "\n"))
	b.ReportMetric(float64(after[total]-before[total])/float64(f)/(1<<20), "MiB/stream")
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

const total = "total"

// serverHeap is the heap in use after a GC that was not allocated by the
// simulated Envoys, by the innermost function of this module or of
// go-control-plane that allocated it, and in all under total.
func serverHeap(tb testing.TB) map[string]int64 {
	runtime.GC()
	runtime.GC()
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		tb.Fatal(err)
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		tb.Fatal(err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "inuse_space" {
			idx = i
		}
	}
	out := map[string]int64{}
	for _, smp := range p.Sample {
		site, ours := "", true
		for _, loc := range smp.Location {
			for _, l := range loc.Line {
				fn := l.Function.Name
				if strings.Contains(fn, "e2e/simenvoy.") && !strings.Contains(fn, "e2e/simenvoy.serve") {
					ours = false
				}
				if site == "" && (strings.HasPrefix(fn, "sluice.dev/") || strings.Contains(fn, "go-control-plane")) {
					site = fn
				}
			}
		}
		if !ours {
			continue
		}
		if site == "" {
			site = "(elsewhere)"
		}
		out[site] += smp.Value[idx]
		out[total] += smp.Value[idx]
	}
	return out
}
