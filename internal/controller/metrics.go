package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice.dev/sluice/translator"
)

// Metrics of the control loop. Register them on the admin registry.
type Metrics struct {
	translations   *prometheus.CounterVec
	translateTime  prometheus.Histogram
	publishTime    prometheus.Histogram
	resources      *prometheus.GaugeVec
	endpointPushes prometheus.Counter
	statusWrites   prometheus.Counter
	propagation    prometheus.Histogram
	quarantined    prometheus.Counter
	leader         prometheus.Gauge
}

// NewMetrics creates and registers the controller's metrics.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		translations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_translations_total", Help: "Ingress translations by result (ok or the rejection reason).",
		}, []string{"result"}),
		translateTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_translation_seconds", Help: "Time to translate one ingress.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10),
		}),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sluice_publish_seconds", Help: "Time to assemble and hand over the full state.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10),
		}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_snapshot_resources", Help: "Resources in the last published state, by type.",
		}, []string{"type"}),
		endpointPushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_endpoint_updates_total", Help: "Cluster load assignments changed by endpoint events alone.",
		}),
		statusWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_status_writes_total", Help: "KIngress status updates written.",
		}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_propagation_seconds",
			Help:    "From an ingress change being translated to every connected Envoy serving it.",
			Buckets: prometheus.ExponentialBuckets(1e-3, 2, 16),
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_leader", Help: "1 while this replica holds the Lease and writes KIngress status.",
		}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_ingresses_rejected_by_envoy_total", Help: "Ingress translations taken out after an Envoy NACKed them.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.translations, m.translateTime, m.publishTime, m.resources, m.endpointPushes, m.statusWrites,
			m.propagation, m.quarantined, m.leader)
	}
	return m
}

func (m *Metrics) observeTranslation(d time.Duration, err *translator.Error) {
	result := "ok"
	if err != nil {
		result = err.Reason
	}
	m.translations.WithLabelValues(result).Inc()
	m.translateTime.Observe(d.Seconds())
}

func (m *Metrics) observePublish(d time.Duration, out *translator.Output, endpoints int) {
	m.publishTime.Observe(d.Seconds())
	m.resources.WithLabelValues("listeners").Set(float64(len(out.Listeners)))
	m.resources.WithLabelValues("routes").Set(float64(len(out.Routes)))
	m.resources.WithLabelValues("clusters").Set(float64(len(out.Clusters)))
	m.resources.WithLabelValues("secrets").Set(float64(len(out.Secrets)))
	m.resources.WithLabelValues("endpoints").Set(float64(endpoints))
}
