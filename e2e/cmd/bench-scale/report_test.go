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

// The fleet's readings follow the same rule: one not taken fails the run
// by name, and its cell says so.
func TestFleetNotMeasured(t *testing.T) {
	r := fleetRun{F: 10, HeapWithout: 1 << 20, HeapWith: -1, RSSWithout: 1, RSSWith: 2,
		ControllerCPUPerChangeMs: perChange(5, -1, 3), HeldMs: []float64{1}}
	got := fleetNotMeasured(r)
	want := []string{"controller heap", "CPU per change", "F3 changes"}
	if !slices.Equal(got, want) {
		t.Errorf("fleetNotMeasured = %q, want %q", got, want)
	}
	if c := cell("%.2f MiB", r.perStream()); c != "not measured" {
		t.Errorf("F1 without a heap reading = %q", c)
	}
	r.HeapWith = 11 << 20
	if c := cell("%.2f MiB", r.perStream()); c != "1.00 MiB" {
		t.Errorf("F1 = %q", c)
	}
	if perChange(5, 11, 3) != 2 {
		t.Error("perChange(5, 11, 3) != 2")
	}
}
