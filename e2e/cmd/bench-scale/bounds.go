package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"sluice.dev/sluice/e2e/stack"
)

// The chart's default bounds, applied to the stack's own processes: the
// controller and each Envoy get the memory limit of their container (a
// cgroup each) and the controller GOMEMLIMIT from it, as the chart sets
// it; the Envoys' bootstrap is `sluice bootstrap`'s, whose defaults are the
// chart's (e2e/helm_checks_test.go compares the two).

// bounds are the memory limits in bytes, by process kind.
type bounds map[string]int64

// chartBounds reads the limits from the chart's values.yaml.
func chartBounds(root string) (bounds, error) {
	path := filepath.Join(root, "deploy", "helm", "sluice", "values.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type limits struct {
		Resources struct {
			Limits struct{ Memory string }
		}
	}
	var v struct{ Controller, Gateway limits }
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := bounds{}
	for kind, l := range map[string]limits{"sluice": v.Controller, "envoy": v.Gateway} {
		q := l.Resources.Limits.Memory
		if q == "" {
			return nil, fmt.Errorf("%s: the %s's resources.limits.memory is not set", path, kind)
		}
		n, err := resource.ParseQuantity(q)
		if err != nil {
			return nil, fmt.Errorf("%s: the %s's resources.limits.memory: %w", path, kind, err)
		}
		out[kind] = n.Value()
	}
	return out, nil
}

// env is the controller's environment under the bounds.
func (b bounds) env() []string {
	if b["sluice"] <= 0 {
		return nil
	}
	return []string{"GOMEMLIMIT=" + strconv.FormatInt(b["sluice"], 10)}
}

// memory is what the limited processes used, and the Envoys' own view.
type memory struct {
	Limits         bounds           `json:"limits"`
	Peak           map[string]int64 `json:"peak_bytes"`     // the cgroup's
	PeakRSS        map[string]int64 `json:"peak_rss_bytes"` // the process's (VmHWM)
	OOMKills       int              `json:"oom_kills"`
	EnvoyHeapSize  []int64          `json:"envoy_heap_size_bytes"`
	EnvoyPressure  []float64        `json:"envoy_heap_pressure"`
	OverloadActive []string         `json:"overload_actions_in_effect"`
}

func readMemory(st *stack.Stack, b bounds, envoys int) memory {
	m := memory{Limits: b, Peak: map[string]int64{}, PeakRSS: map[string]int64{}}
	names := []string{"sluice-0"}
	for e := 0; e < envoys; e++ {
		names = append(names, fmt.Sprintf("envoy-%d", e))
	}
	for _, n := range names {
		if peak, kills, ok := st.Memory(n); ok {
			m.Peak[n] = peak
			m.OOMKills += kills
		}
		m.PeakRSS[n] = procStatus(st.Pid(n), "VmHWM:")
	}
	for e := 0; e < envoys; e++ {
		m.EnvoyHeapSize = append(m.EnvoyHeapSize, int64(envoyStat(st, e, "server.memory_heap_size")))
		m.EnvoyPressure = append(m.EnvoyPressure, envoyStat(st, e, "overload.envoy.resource_monitors.fixed_heap.pressure")/100)
		for _, a := range envoyStats(st, e, `^overload\.envoy\.overload_actions\..*\.scale_percent$`) {
			if a.v > 0 {
				m.OverloadActive = append(m.OverloadActive, fmt.Sprintf("envoy-%d %s %.0f%%", e, strings.TrimSuffix(strings.TrimPrefix(a.name, "overload.envoy.overload_actions."), ".scale_percent"), a.v))
			}
		}
	}
	return m
}
