package controller

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"sluice.dev/sluice/translator"
)

// Endpoints: EDS assignments follow EndpointSlices without re-translating
// any route.

func (c *Controller) slicesFor(ns, svc string) []*discoveryv1.EndpointSlice {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc})
	s, err := c.sliceLister.EndpointSlices(ns).List(sel)
	if err != nil {
		return nil
	}
	return s
}

// sliceChanged recomputes the assignments of the clusters of the slice's
// Service and sends only those: endpoint churn never re-translates routes.
func (c *Controller) sliceChanged(obj any) {
	m, ok := metaOf(obj)
	if !ok {
		return
	}
	svc := m.GetLabels()[discoveryv1.LabelServiceName]
	if svc == "" {
		return
	}
	c.mu.Lock()
	if !c.published {
		c.mu.Unlock()
		return
	}
	changed := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, name := range c.clustersBySvc[m.GetNamespace()+"/"+svc] {
		b := c.backends[name]
		cla := translator.LoadAssignment(name, b, c.slicesFor(b.Namespace, b.Service))
		if old := c.eds[name]; old == nil || !proto.Equal(old, cla) {
			c.eds[name] = cla
			changed[name] = cla
		}
	}
	c.mu.Unlock()
	if len(changed) == 0 {
		return
	}
	if err := c.sink.PublishEndpoints(changed); err != nil {
		c.log.Error("publishing endpoints failed", zap.Error(err))
		return
	}
	c.metrics.endpointPushes.Add(float64(len(changed)))
}
