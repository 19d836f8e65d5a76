package main

import (
	"slices"
	"testing"
)

// A reading that could not be taken (-1) is named, and printed as "not
// measured", never as a figure.
func TestNotMeasured(t *testing.T) {
	r := run{
		CreateMs: []float64{30}, BytesPerChange: []float64{1000, -1},
		ControllerRSS: -1, ControllerHeap: 5 << 20, EnvoyHeap: []int64{7 << 20, -1},
		Memory: memory{Limits: bounds{"envoy": 1 << 30}, PeakRSS: map[string]int64{"envoy-0": 1 << 20}, Peak: map[string]int64{}},
	}
	got := notMeasured(r)
	want := []string{"bytes per change", "controller RSS", "Envoy heap", "envoy-0 cgroup peak"}
	if !slices.Equal(got, want) {
		t.Errorf("notMeasured = %q, want %q", got, want)
	}
	if c := cell("%.0f MiB", -1); c != "not measured" {
		t.Errorf("cell(-1) = %q", c)
	}
	if c := cell("%.0f / %.0f", 3, 4); c != "3 / 4" {
		t.Errorf("cell = %q", c)
	}
	if h := highest(3, -1, 5); h != -1 {
		t.Errorf("highest with a -1 = %d", h)
	}
	if h := highest(3, 5); h != 5 {
		t.Errorf("highest = %d", h)
	}
	if len(notMeasured(run{CreateMs: []float64{1}, EnvoyHeap: []int64{1}})) != 0 {
		t.Error("a complete run has readings not measured")
	}
}
