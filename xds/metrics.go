package xds

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	pushes    *prometheus.CounterVec
	acks      *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	connected prometheus.Gauge
	resources *prometheus.GaugeVec
	bytes     *prometheus.GaugeVec
	// What Envoys report (memory.go), per Envoy.
	heapPressure    *prometheus.GaugeVec
	overloadActions *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_xds_pushes_total", Help: "xDS responses sent to Envoys, by resource type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_xds_acks_total", Help: "xDS responses ACKed by Envoys, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_xds_nacks_total", Help: "xDS responses NACKed by Envoys, by resource type.",
		}, []string{"type"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_xds_connected_envoys", Help: "Distinct Envoy node IDs with an open xDS stream.",
		}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_xds_resources", Help: "Resources served, by type.",
		}, []string{"type"}),
		bytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_xds_resource_bytes", Help: "Serialized size of the resources served, by type.",
		}, []string{"type"}),
		heapPressure: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_envoy_heap_pressure", Help: "Each Envoy's heap in use over its heap bound (--max-heap-bytes), as it last reported; its overload actions start at 0.8.",
		}, []string{"envoy"}),
		overloadActions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_envoy_overload_action", Help: "Overload actions in effect in each Envoy, as it last reported, by their scale (0-1].",
		}, []string{"envoy", "action"}),
	}
	if reg != nil {
		reg.MustRegister(m.pushes, m.acks, m.nacks, m.connected, m.resources, m.bytes, m.heapPressure, m.overloadActions)
	}
	return m
}

// typeLabel turns a type URL into a short label ("cluster", "listener", ...).
func typeLabel(typeURL string) string {
	switch typeURL {
	case clusterType:
		return "cluster"
	case endpointType:
		return "endpoint"
	case listenerType:
		return "listener"
	case routeType:
		return "route"
	case scopeType:
		return "scope"
	case secretType:
		return "secret"
	}
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}
