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
	var m missing
	if len(r.CreateMs) == 0 && len(r.UpdateMs) == 0 {
		m = append(m, "changes")
	}
	m.check("bytes per change", r.BytesPerChange...)
	m.check("controller CPU", r.ControllerCPUms)
	m.check("controller RSS", float64(r.ControllerRSS))
	m.check("controller heap", float64(r.ControllerHeap))
	m.check("Envoy heap", floats(r.EnvoyHeap...)...)
	if len(r.Memory.Limits) > 0 {
		for _, n := range slices.Sorted(maps.Keys(r.Memory.PeakRSS)) {
			m.check(n+" peak RSS", float64(r.Memory.PeakRSS[n]))
			if _, ok := r.Memory.Peak[n]; !ok {
				m = append(m, n+" cgroup peak")
			}
		}
		m.check("Envoy heap size", floats(r.Memory.EnvoyHeapSize...)...)
		m.check("Envoy heap pressure", r.Memory.EnvoyPressure...)
	}
	return m
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

// mib prints sizes in MiB, separated by " / ", or "not measured".
func mib(bs ...int64) string {
	f := make([]float64, len(bs))
	for i, b := range bs {
		f[i] = float64(b >> 20)
		if b < 0 {
			f[i] = -1
		}
	}
	return cell(strings.Repeat(" / %.0f MiB", len(bs))[3:], f...)
}

func report(runs []run) {
	head := []string{fmt.Sprintf("N = %d", runs[0].N)}
	for _, r := range runs {
		head = append(head, r.Name)
	}
	rows := []tableRow[run]{
		one("P1 create -> served, p50 / p90 / p99 / max", func(r run) string {
			if len(r.CreateMs) == 0 {
				return "none measured"
			}
			return cell("%.0f / %.0f / %.0f / %.0f ms", pct(r.CreateMs, 50), pct(r.CreateMs, 90), pct(r.CreateMs, 99), pct(r.CreateMs, 100))
		}),
		one("P1 update -> served, p50 / max", func(r run) string {
			if len(r.UpdateMs) == 0 {
				return "none measured"
			}
			return cell("%.0f / %.0f ms", pct(r.UpdateMs, 50), pct(r.UpdateMs, 100))
		}),
		one("P2 bytes to one Envoy per change", func(r run) string {
			if slices.ContainsFunc(r.BytesPerChange, func(b float64) bool { return b < 0 }) {
				return "not measured"
			}
			return cell("%.1f KB", mean(r.BytesPerChange)/1000)
		}),
		one("P3 cold start, sample served", func(r run) string { return cell("%.1f s", r.ColdStartMs/1000) }),
		one("controller CPU until then", func(r run) string { return cell("%.1f s", r.ControllerCPUms/1000) }),
		one("P4 controller RSS settled", func(r run) string { return mib(r.ControllerRSS) }),
		one("controller heap in use after a GC", func(r run) string { return mib(r.ControllerHeap) }),
		one("P5 Envoy heap per KIngress", func(r run) string {
			h := 0.0
			for _, x := range r.EnvoyHeap {
				if x < 0 {
					return "not measured"
				}
				h += float64(x)
			}
			return fmt.Sprintf("%.0f KiB", h/float64(max(len(r.EnvoyHeap), 1))/float64(r.N)/1024)
		}),
	}
	if len(runs[0].Memory.Limits) > 0 {
		rows = append(rows, memoryRows()...)
	}
	printTable(head, runs, rows)
}

// memoryRows are the rows of a run with memory limits.
func memoryRows() []tableRow[run] {
	peak := func(r run, name string) int64 {
		if p, ok := r.Memory.Peak[name]; ok {
			return p
		}
		return -1
	}
	return []tableRow[run]{
		one("controller peak RSS / cgroup peak / limit", func(r run) string {
			return mib(r.Memory.PeakRSS["sluice-0"], peak(r, "sluice-0"), r.Memory.Limits["sluice"])
		}),
		one("Envoy allocated / heap size", func(r run) string {
			return mib(highest(r.EnvoyHeap...), highest(r.Memory.EnvoyHeapSize...))
		}),
		one("Envoy peak RSS / cgroup peak / limit", func(r run) string {
			return mib(highest(r.Memory.PeakRSS["envoy-0"], r.Memory.PeakRSS["envoy-1"]), highest(peak(r, "envoy-0"), peak(r, "envoy-1")), r.Memory.Limits["envoy"])
		}),
		one("Envoy heap pressure (of --max-heap-bytes)", func(r run) string {
			if slices.Min(r.Memory.EnvoyPressure) < 0 {
				return "not measured"
			}
			return fmt.Sprintf("%.0f %%", 100*slices.Max(r.Memory.EnvoyPressure))
		}),
		one("overload actions in effect", func(r run) string {
			if len(r.Memory.OverloadActive) == 0 {
				return "none"
			}
			return strings.Join(r.Memory.OverloadActive, ", ")
		}),
		one("processes killed for memory", func(r run) string { return fmt.Sprint(r.Memory.OOMKills) }),
	}
}

// highest is the largest of vs, or -1 when one is -1 (not measured).
func highest(vs ...int64) int64 {
	if len(vs) == 0 || slices.Min(vs) < 0 {
		return -1
	}
	return slices.Max(vs)
}
