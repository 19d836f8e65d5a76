package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(p/100*float64(len(s)-1) + 0.5)
	return s[i]
}

func mean(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t / float64(max(len(xs), 1))
}

func report(runs []run) {
	fmt.Printf("\n| N = %d | %s |\n|---|", runs[0].N, names(runs))
	for range runs {
		fmt.Print("---:|")
	}
	fmt.Println()
	row := func(label string, f func(r run) string) {
		fmt.Printf("| %s |", label)
		for _, r := range runs {
			fmt.Printf(" %s |", f(r))
		}
		fmt.Println()
	}
	row("P1 create -> served, p50 / p90 / p99 / max", func(r run) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f / %.0f ms", pct(r.CreateMs, 50), pct(r.CreateMs, 90), pct(r.CreateMs, 99), pct(r.CreateMs, 100))
	})
	row("P1 update -> served, p50 / max", func(r run) string {
		return fmt.Sprintf("%.0f / %.0f ms", pct(r.UpdateMs, 50), pct(r.UpdateMs, 100))
	})
	row("P2 bytes to one Envoy per change", func(r run) string { return fmt.Sprintf("%.1f KB", mean(r.BytesPerChange)/1000) })
	row("P3 cold start, sample served", func(r run) string { return fmt.Sprintf("%.1f s", r.ColdStartMs/1000) })
	row("controller CPU until then", func(r run) string { return fmt.Sprintf("%.1f s", r.ControllerCPUms/1000) })
	row("P4 controller RSS settled", func(r run) string { return fmt.Sprintf("%d MiB", r.ControllerRSS>>20) })
	row("controller heap in use after a GC", func(r run) string { return fmt.Sprintf("%d MiB", r.ControllerHeap>>20) })
	row("P5 Envoy heap per KIngress", func(r run) string {
		h := 0.0
		for _, x := range r.EnvoyHeap {
			h += float64(x)
		}
		return fmt.Sprintf("%.0f KiB", h/float64(max(len(r.EnvoyHeap), 1))/float64(r.N)/1024)
	})
	if len(r0(runs).Memory.Limits) == 0 {
		return
	}
	mib := func(b int64) string { return fmt.Sprintf("%d MiB", b>>20) }
	row("controller peak RSS / cgroup peak / limit", func(r run) string {
		return mib(r.Memory.PeakRSS["sluice-0"]) + " / " + mib(r.Memory.Peak["sluice-0"]) + " / " + mib(r.Memory.Limits["sluice"])
	})
	row("Envoy allocated / heap size", func(r run) string {
		return mib(slices.Max(r.EnvoyHeap)) + " / " + mib(slices.Max(r.Memory.EnvoyHeapSize))
	})
	row("Envoy peak RSS / cgroup peak / limit", func(r run) string {
		return mib(max(r.Memory.PeakRSS["envoy-0"], r.Memory.PeakRSS["envoy-1"])) + " / " +
			mib(max(r.Memory.Peak["envoy-0"], r.Memory.Peak["envoy-1"])) + " / " + mib(r.Memory.Limits["envoy"])
	})
	row("Envoy heap pressure (of --max-heap-bytes)", func(r run) string {
		return fmt.Sprintf("%.0f %%", 100*slices.Max(r.Memory.EnvoyPressure))
	})
	row("overload actions in effect", func(r run) string {
		if len(r.Memory.OverloadActive) == 0 {
			return "none"
		}
		return strings.Join(r.Memory.OverloadActive, ", ")
	})
	row("processes killed for memory", func(r run) string { return fmt.Sprint(r.Memory.OOMKills) })
}

func r0(runs []run) run { return runs[0] }

func names(runs []run) string {
	var s []string
	for _, r := range runs {
		s = append(s, r.Name)
	}
	return strings.Join(s, " | ")
}
