package controller

import (
	"context"
	"maps"
	"slices"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/zap"

	"sluice.dev/sluice/translator"
)

// Publishing: the table's change goes to the sink, debounced, and the
// ingresses whose outcome changed are queued for a status write.

func (c *Controller) requestPublish() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Controller) publishLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		if c.opts.Debounce > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.opts.Debounce):
			}
		}
		if err := c.publish(); err != nil {
			c.log.Error("publish failed", zap.Error(err))
			time.AfterFunc(time.Second, c.requestPublish)
		}
	}
}

// publish builds the state and hands its change to the sink, then queues a
// status update for every ingress whose outcome changed.
func (c *Controller) publish() error {
	start := time.Now()
	c.mu.Lock()
	out := c.table.Build()
	// Assignments of the clusters the Build changed (all of them on a
	// table's first Build), kept up to date with their Services.
	names := out.Edits.Clusters
	if out.Edits.All || c.eds == nil {
		c.eds, c.clusterSvc, c.clustersBySvc = map[string]*endpointv3.ClusterLoadAssignment{}, map[string]string{}, map[string][]string{}
		names = slices.Collect(maps.Keys(out.Backends))
	}
	eds := make(map[string]*endpointv3.ClusterLoadAssignment, len(names))
	for _, name := range names {
		if svc, ok := c.clusterSvc[name]; ok {
			c.clustersBySvc[svc] = slices.DeleteFunc(c.clustersBySvc[svc], func(n string) bool { return n == name })
			if len(c.clustersBySvc[svc]) == 0 {
				delete(c.clustersBySvc, svc)
			}
			delete(c.clusterSvc, name)
		}
		b, ok := out.Backends[name]
		if !ok || b.External {
			delete(c.eds, name)
			continue
		}
		svc := b.Namespace + "/" + b.Service
		c.clusterSvc[name] = svc
		c.clustersBySvc[svc] = append(c.clustersBySvc[svc], name)
		cla := translator.LoadAssignment(name, b, c.slicesFor(b.Namespace, b.Service))
		c.eds[name] = cla
		eds[name] = cla
	}
	c.backends = out.Backends
	nEDS := len(c.eds)
	changed := c.changedStatuses()
	c.mu.Unlock()

	gen, err := c.sink.Publish(out, eds)
	if err != nil {
		return err
	}
	c.metrics.observePublish(time.Since(start), out, nEDS)
	c.book.Published(changed, gen, time.Now())
	c.mu.Lock()
	c.published = true
	c.mu.Unlock()
	// An Envoy may have NACKed this generation before the book knew it was
	// published; that check found no suspect, and no other signal may come.
	c.checkRejections()
	for _, k := range changed {
		c.statusQueue.Add(k)
	}
	return nil
}

// changedStatuses lists ingresses whose piece or conflict state changed
// since the last build, and forgets those gone: only those the table's
// Build took in again are looked at, so one change among many costs one.
// Called with mu held, after Build.
func (c *Controller) changedStatuses() []string {
	var out []string
	for _, k := range c.table.Changed() {
		p, ok := c.table.Get(k)
		if !ok {
			c.book.Forget(k)
			continue
		}
		if c.book.Noted(p, c.table.Status(k)) {
			out = append(out, k)
		}
	}
	return out
}
