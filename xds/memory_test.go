package xds

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"

	"sluice.dev/sluice/internal/bootstrap"
)

// report is what an Envoy's OpenTelemetry sink sends: gauges by full name.
func report(attrs map[string]string, gauges map[string]int64) *colmetricspb.ExportMetricsServiceRequest {
	res := &resourcepb.Resource{}
	for k, v := range attrs {
		res.Attributes = append(res.Attributes, &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}})
	}
	sm := &metricspb.ScopeMetrics{}
	for name, v := range gauges {
		sm.Metrics = append(sm.Metrics, &metricspb.Metric{Name: name, Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{
			DataPoints: []*metricspb.NumberDataPoint{{Value: &metricspb.NumberDataPoint_AsInt{AsInt: v}}},
		}}})
	}
	return &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{Resource: res, ScopeMetrics: []*metricspb.ScopeMetrics{sm}}}}
}

// An Envoy whose overload manager refuses requests is left out of
// readiness, and named with why; one under pressure but serving is not.
func TestMemoryReports(t *testing.T) {
	s := startServer(t, Options{})
	ctx := context.Background()
	send := func(attrs map[string]string, gauges map[string]int64) {
		t.Helper()
		if _, err := s.memory.Export(ctx, report(attrs, gauges)); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]string{"sluice.bootstrap.node": "from-bootstrap", "sluice.node": "pod-a"}, map[string]int64{
		"overload.envoy.resource_monitors.fixed_heap.pressure":                   93,
		"overload.envoy.overload_actions.reduce_timeouts.scale_percent":          100,
		"overload.envoy.overload_actions.reset_high_memory_stream.scale_percent": 37,
		"overload.envoy.overload_actions.shrink_heap.active":                     0,
		"server.memory_allocated":                                                1 << 30,
	})
	send(map[string]string{"sluice.bootstrap.node": "pod-b"}, map[string]int64{
		"overload.envoy.resource_monitors.fixed_heap.pressure":           99,
		"overload.envoy.overload_actions.stop_accepting_requests.active": 1,
	})
	send(map[string]string{}, map[string]int64{"overload.envoy.resource_monitors.fixed_heap.pressure": 50})

	a, ok := s.memory.get("pod-a")
	if !ok || a.Pressure != 0.93 || a.Allocated != 1<<30 || a.Refusing() != "" {
		t.Fatalf("pod-a (the environment's name wins over the bootstrap's): %+v, %v", a, ok)
	}
	if want := map[string]float64{"reduce_timeouts": 1, "reset_high_memory_stream": 0.37}; !mapsEqual(a.Actions, want) {
		t.Errorf("pod-a actions %v, want %v", a.Actions, want)
	}
	if _, ok := s.memory.get("from-bootstrap"); ok {
		t.Error("a report was kept under the bootstrap's node id although the environment named the pod")
	}
	if got := s.Refusing("pod-b"); got != "stop_accepting_requests" {
		t.Errorf("Refusing(pod-b) = %q", got)
	}
	if got := s.serving([]string{"pod-a", "pod-b", "pod-c"}); !slices.Equal(got, []string{"pod-a", "pod-c"}) {
		t.Errorf("serving = %v: the refusing Envoy must be left out, the others kept", got)
	}
	if v := s.metricLabels(t, "sluice_envoy_heap_pressure", map[string]string{"envoy": "pod-b"}); v != 0.99 {
		t.Errorf("sluice_envoy_heap_pressure{envoy=pod-b} = %v", v)
	}
	if v := s.metricLabels(t, "sluice_envoy_overload_action", map[string]string{"envoy": "pod-a", "action": "reset_high_memory_stream"}); v != 0.37 {
		t.Errorf("sluice_envoy_overload_action{pod-a, reset_high_memory_stream} = %v", v)
	}
	// It recovers: no longer refusing, counted again.
	send(map[string]string{"sluice.bootstrap.node": "pod-b"}, map[string]int64{"overload.envoy.resource_monitors.fixed_heap.pressure": 60})
	if got := s.Refusing("pod-b"); got != "" {
		t.Errorf("Refusing(pod-b) after recovery = %q", got)
	}
	if v := s.metricLabels(t, "sluice_envoy_overload_action", map[string]string{"envoy": "pod-b", "action": "stop_accepting_requests"}); v != -1 {
		t.Errorf("the series of an action no longer in effect is still there: %v", v)
	}
	// Silence: forgotten.
	s.memory.expire(time.Now().Add(reportTTL))
	if _, ok := s.memory.get("pod-a"); ok {
		t.Error("a report older than reportTTL was kept")
	}
	if v := s.metricLabels(t, "sluice_envoy_heap_pressure", map[string]string{"envoy": "pod-a"}); v != -1 {
		t.Errorf("the series of a silent Envoy is still there: %v", v)
	}
}

func mapsEqual(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A real Envoy with Sluice's bootstrap and a heap bound it is past reports
// its pressure and overload actions, and keeps only the stats Sluice reads.
func TestRealEnvoyReportsMemory(t *testing.T) {
	bin := envoyBinary(t)
	s := startServer(t, Options{})
	dir := t.TempDir()
	b, err := bootstrap.Build(bootstrap.Options{XDSAddress: s.addr, NodeID: "envoy-mem", NodeCluster: "gateway",
		AdminAddress: "127.0.0.1:" + strconv.Itoa(freePort(t)), MaxConnections: 1000, MaxHeapBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	y, err := bootstrap.YAML(b)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfg, y, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", cfg, "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn",
		"--log-path", filepath.Join(dir, "envoy.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	var m Memory
	for {
		var ok bool
		if m, ok = s.memory.get("envoy-mem"); ok && m.Pressure >= 1 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "envoy.log"))
			t.Fatalf("no report of a heap past its bound within 30 s (last %+v); envoy log:\n%s", m, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("report: %+v", m)
	if m.Pressure < 1 || m.Allocated == 0 || m.Heap == 0 {
		t.Errorf("an Envoy with a 4 MiB heap bound reported pressure %.2f, allocated %d, heap %d", m.Pressure, m.Allocated, m.Heap)
	}
	for _, a := range []string{"reduce_timeouts", "shrink_heap", "reset_high_memory_stream"} {
		if m.Actions[a] == 0 {
			t.Errorf("action %s not in effect past the bound: %v", a, m.Actions)
		}
	}
	if why := m.Refusing(); why != "" {
		t.Errorf("Sluice's bootstrap refuses traffic for heap: %s", why)
	}
}

// metricLabels returns the gauge of name whose labels include want, -1 if
// there is none.
func (s *testServer) metricLabels(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
