package main

import (
	"fmt"
	"maps"
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

// notMeasured names the readings of r that could not be taken (-1), or
// are missing, so that the table says so instead of printing them.
func notMeasured(r run) []string {
	var out []string
	neg := func(name string, vs ...float64) {
		for _, v := range vs {
			if v < 0 {
				out = append(out, name)
				return
			}
		}
	}
	ints := func(vs ...int64) []float64 {
		var f []float64
		for _, v := range vs {
			f = append(f, float64(v))
		}
		return f
	}
	if len(r.CreateMs) == 0 && len(r.UpdateMs) == 0 {
		out = append(out, "changes")
	}
	neg("bytes per change", r.BytesPerChange...)
	neg("controller CPU", r.ControllerCPUms)
	neg("controller RSS", float64(r.ControllerRSS))
	neg("controller heap", float64(r.ControllerHeap))
	neg("Envoy heap", ints(r.EnvoyHeap...)...)
	if len(r.Memory.Limits) > 0 {
		for _, n := range slices.Sorted(maps.Keys(r.Memory.PeakRSS)) {
			neg(n+" peak RSS", float64(r.Memory.PeakRSS[n]))
			if _, ok := r.Memory.Peak[n]; !ok {
				out = append(out, n+" cgroup peak")
			}
		}
		neg("Envoy heap size", ints(r.Memory.EnvoyHeapSize...)...)
		neg("Envoy heap pressure", r.Memory.EnvoyPressure...)
	}
	return out
}

// cell prints a reading, or "not measured" when any of vs is -1.
func cell(format string, vs ...float64) string {
	for _, v := range vs {
		if v < 0 {
			return "not measured"
		}
	}
	args := make([]any, len(vs))
	for i, v := range vs {
		args[i] = v
	}
	return fmt.Sprintf(format, args...)
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
		if len(r.CreateMs) == 0 {
			return "none measured"
		}
		return cell("%.0f / %.0f / %.0f / %.0f ms", pct(r.CreateMs, 50), pct(r.CreateMs, 90), pct(r.CreateMs, 99), pct(r.CreateMs, 100))
	})
	row("P1 update -> served, p50 / max", func(r run) string {
		if len(r.UpdateMs) == 0 {
			return "none measured"
		}
		return cell("%.0f / %.0f ms", pct(r.UpdateMs, 50), pct(r.UpdateMs, 100))
	})
	row("P2 bytes to one Envoy per change", func(r run) string {
		if slices.ContainsFunc(r.BytesPerChange, func(b float64) bool { return b < 0 }) {
			return "not measured"
		}
		return cell("%.1f KB", mean(r.BytesPerChange)/1000)
	})
	row("P3 cold start, sample served", func(r run) string { return cell("%.1f s", r.ColdStartMs/1000) })
	row("controller CPU until then", func(r run) string { return cell("%.1f s", r.ControllerCPUms/1000) })
	mib := func(bs ...int64) string {
		f := make([]float64, len(bs))
		for i, b := range bs {
			f[i] = float64(b >> 20)
			if b < 0 {
				f[i] = -1
			}
		}
		return cell(strings.Repeat(" / %.0f MiB", len(bs))[3:], f...)
	}
	row("P4 controller RSS settled", func(r run) string { return mib(r.ControllerRSS) })
	row("controller heap in use after a GC", func(r run) string { return mib(r.ControllerHeap) })
	row("P5 Envoy heap per KIngress", func(r run) string {
		h := 0.0
		for _, x := range r.EnvoyHeap {
			if x < 0 {
				return "not measured"
			}
			h += float64(x)
		}
		return fmt.Sprintf("%.0f KiB", h/float64(max(len(r.EnvoyHeap), 1))/float64(r.N)/1024)
	})
	if len(r0(runs).Memory.Limits) == 0 {
		return
	}
	peak := func(r run, name string) int64 {
		if p, ok := r.Memory.Peak[name]; ok {
			return p
		}
		return -1
	}
	row("controller peak RSS / cgroup peak / limit", func(r run) string {
		return mib(r.Memory.PeakRSS["sluice-0"], peak(r, "sluice-0"), r.Memory.Limits["sluice"])
	})
	row("Envoy allocated / heap size", func(r run) string {
		return mib(highest(r.EnvoyHeap...), highest(r.Memory.EnvoyHeapSize...))
	})
	row("Envoy peak RSS / cgroup peak / limit", func(r run) string {
		return mib(highest(r.Memory.PeakRSS["envoy-0"], r.Memory.PeakRSS["envoy-1"]), highest(peak(r, "envoy-0"), peak(r, "envoy-1")), r.Memory.Limits["envoy"])
	})
	row("Envoy heap pressure (of --max-heap-bytes)", func(r run) string {
		if slices.Min(r.Memory.EnvoyPressure) < 0 {
			return "not measured"
		}
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

// highest is the largest of vs, or -1 when one is -1 (not measured).
func highest(vs ...int64) int64 {
	if len(vs) == 0 || slices.Min(vs) < 0 {
		return -1
	}
	return slices.Max(vs)
}

func r0(runs []run) run { return runs[0] }

func names(runs []run) string {
	var s []string
	for _, r := range runs {
		s = append(s, r.Name)
	}
	return strings.Join(s, " | ")
}
