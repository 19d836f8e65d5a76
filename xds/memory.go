package xds

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"sluice.dev/sluice/internal/bootstrap"
)

// What Envoys report of their memory and overload state, over the
// OpenTelemetry stats sink their bootstrap points at this server
// (internal/bootstrap/report.go): an Envoy cannot say it over xDS, and
// readiness, which comes from ACKs, would not see an Envoy that holds
// everything but refuses requests.

// Report attributes naming the Envoy: the pod name from the environment
// first, as --service-node overrides the bootstrap's node id.
var reportNodeAttrs = []string{bootstrap.NodeAttr, bootstrap.BootstrapNodeAttr}

// reportTTL forgets an Envoy that stopped reporting (several flushes).
const reportTTL = 30 * time.Second

// Memory is an Envoy's last report.
type Memory struct {
	// Pressure is its heap in use over its heap bound (fixed_heap), 0
	// without a bound.
	Pressure float64
	// Allocated and Heap are tcmalloc's allocated bytes and heap size.
	Allocated, Heap uint64
	// Actions maps each overload action in effect to its scale (0-1].
	Actions map[string]float64
	At      time.Time
}

// refusing are the overload actions under which Envoy turns requests or
// connections away.
var refusing = []string{"stop_accepting_requests", "reject_incoming_connections", "stop_accepting_connections"}

// Refusing says which of the actions in effect turn traffic away, "" if
// none.
func (m Memory) Refusing() string {
	var out []string
	for _, a := range slices.Sorted(maps.Keys(m.Actions)) {
		if slices.Contains(refusing, a) {
			out = append(out, a)
		}
	}
	return strings.Join(out, ",")
}

type memoryReports struct {
	colmetricspb.UnimplementedMetricsServiceServer
	m      *metrics
	notify func() // readiness looks again when an Envoy starts or stops refusing

	mu       sync.Mutex
	nodes    map[string]Memory
	refusing map[string]string // node -> its refusing actions, kept with nodes
}

func newMemoryReports(m *metrics, notify func()) *memoryReports {
	return &memoryReports{m: m, notify: notify, nodes: map[string]Memory{}, refusing: map[string]string{}}
}

// run expires reports until ctx is done.
func (r *memoryReports) run(ctx context.Context) {
	t := time.NewTicker(reportTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.expire(now)
		}
	}
}

// Export takes one Envoy's stats flush.
func (r *memoryReports) Export(_ context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	now := time.Now()
	for _, rm := range req.GetResourceMetrics() {
		node := reportNode(rm)
		if node == "" {
			continue
		}
		mem := Memory{Actions: map[string]float64{}, At: now}
		for _, sm := range rm.GetScopeMetrics() {
			for _, met := range sm.GetMetrics() {
				pts := met.GetGauge().GetDataPoints()
				if len(pts) == 0 {
					continue
				}
				v := float64(pts[0].GetAsInt())
				if d, ok := pts[0].GetValue().(*metricspb.NumberDataPoint_AsDouble); ok {
					v = d.AsDouble
				}
				mem.add(met.GetName(), v)
			}
		}
		r.set(node, mem)
	}
	return &colmetricspb.ExportMetricsServiceResponse{}, nil
}

func reportNode(rm *metricspb.ResourceMetrics) string {
	attrs := map[string]string{}
	for _, kv := range rm.GetResource().GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	for _, k := range reportNodeAttrs {
		if v := attrs[k]; v != "" {
			return v
		}
	}
	return ""
}

// add reads one stat: overload.<monitor>.pressure (percent),
// overload.<action>.scale_percent and .active, server.memory_*.
func (m *Memory) add(name string, v float64) {
	const actions = "overload.envoy.overload_actions."
	switch {
	case name == "overload.envoy.resource_monitors.fixed_heap.pressure":
		m.Pressure = v / 100
	case name == "server.memory_allocated":
		m.Allocated = uint64(v)
	case name == "server.memory_heap_size":
		m.Heap = uint64(v)
	case strings.HasPrefix(name, actions) && v > 0:
		a, stat, _ := strings.Cut(strings.TrimPrefix(name, actions), ".")
		switch stat {
		case "scale_percent":
			m.Actions[a] = max(m.Actions[a], v/100)
		case "active":
			m.Actions[a] = 1
		}
	}
}

func (r *memoryReports) set(node string, mem Memory) {
	r.mu.Lock()
	old, had := r.nodes[node]
	r.nodes[node] = mem
	changed := r.setRefusingLocked(node, mem.Refusing())
	r.mu.Unlock()
	if changed {
		r.notify()
	}
	r.m.heapPressure.WithLabelValues(node).Set(mem.Pressure)
	for a, v := range mem.Actions {
		r.m.overloadActions.WithLabelValues(node, a).Set(v)
	}
	if had {
		for a := range old.Actions {
			if _, ok := mem.Actions[a]; !ok {
				r.m.overloadActions.DeleteLabelValues(node, a)
			}
		}
	}
}

// get returns node's report if it is recent.
func (r *memoryReports) get(node string) (Memory, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.nodes[node]
	return m, ok && time.Since(m.At) < reportTTL
}

func (r *memoryReports) setRefusingLocked(node, why string) (changed bool) {
	if r.refusing[node] == why {
		return false
	}
	if why == "" {
		delete(r.refusing, node)
	} else {
		r.refusing[node] = why
	}
	return true
}

// refusingOf says why node turns traffic away, "" if it does not.
func (r *memoryReports) refusingOf(node string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refusing[node]
}

// expire forgets Envoys that stopped reporting, and their series.
func (r *memoryReports) expire(now time.Time) {
	r.mu.Lock()
	changed := false
	for node, m := range r.nodes {
		if now.Sub(m.At) >= reportTTL {
			delete(r.nodes, node)
			changed = r.setRefusingLocked(node, "") || changed
			r.m.heapPressure.DeleteLabelValues(node)
			for a := range m.Actions {
				r.m.overloadActions.DeleteLabelValues(node, a)
			}
		}
	}
	r.mu.Unlock()
	if changed {
		r.notify()
	}
}

// Memory metadata keys in CSDS answers, for peers and `sluice status`.
const (
	PressureKey = "sluice.heap_pressure"
	RefusingKey = "sluice.refusing"
)

// metadata renders a report for a CSDS node's metadata.
func (m Memory) metadata() map[string]string {
	return map[string]string{PressureKey: strconv.FormatFloat(m.Pressure, 'f', 3, 64), RefusingKey: m.Refusing()}
}
