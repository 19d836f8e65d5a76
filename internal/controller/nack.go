package controller

import (
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/translator"
)

// ReasonEnvoyRejected marks an ingress whose resources an Envoy NACKed.
const ReasonEnvoyRejected = "EnvoyRejected"

// Rejection is an Envoy's standing NACK of one resource at one version.
type Rejection struct {
	Node, TypeURL, Name, Version, Error string
}

// Resource type URLs, as the xds package and Envoy name them.
const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeScope    = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
	typeSecret   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// quarantined remembers an ingress whose translation an Envoy rejected:
// that exact translation stays out until the ingress or what it references
// changes.
type quarantined struct {
	digest string
	err    *translator.Error
}

// checkRejections finds the ingresses behind standing NACKs of what we
// serve now, takes them out of the served state with Envoy's error as
// their reason, and republishes: everyone else keeps the last good config
// plus all good changes.
//
// Only the leader decides, from the NACKs of every Envoy (its peers'
// too), and says so in the ingress's status; every replica then leaves
// that generation out (see statusRejection), so all replicas keep serving
// the same content.
func (c *Controller) checkRejections() {
	if !c.isLeader() {
		return
	}
	rejs := c.sink.Rejections()
	if len(rejs) == 0 {
		return
	}
	c.mu.Lock()
	// A handled version no longer served is history: if it comes back it
	// is judged anew.
	for id, v := range c.handled {
		if c.sink.Current(id[0], id[1]) != v {
			delete(c.handled, id)
		}
	}
	// Suspects first, all against the same table, then take them out.
	found := map[string]Rejection{}
	var hit, why []string
	for _, r := range rejs {
		for _, key := range c.suspectsLocked(r) {
			if _, dup := found[key]; !dup {
				found[key] = r
				hit = append(hit, key)
			}
		}
	}
	for _, key := range hit {
		r := found[key]
		p, _ := c.table.Get(key)
		why = append(why, fmt.Sprintf("%s: %s %s at %s, served in generation %d, confirmed %d",
			key, typeName(r.TypeURL), r.Name, r.Version, c.servedGen[key], c.confirmed[key]))
		e := &translator.Error{Reason: ReasonEnvoyRejected,
			Message: fmt.Sprintf("Envoy %s rejected %s %q: %s", r.Node, typeName(r.TypeURL), r.Name, r.Error)}
		c.quarantine[key] = quarantined{digest: p.Digest, err: e}
		c.table.Set(rejectedPiece(p, e))
	}
	c.mu.Unlock()
	if len(hit) == 0 {
		return
	}
	c.log.Warn("Envoy rejected the config of some ingresses; serving without them", zap.Strings("ingresses", hit), zap.Strings("why", why))
	c.metrics.quarantined.Add(float64(len(hit)))
	c.requestPublish()
}

// suspectsLocked lists the ingresses whose current translation may have
// caused r: those feeding the rejected resource and not yet confirmed
// served by every Envoy. A served ingress is never blamed: with no suspect
// the Envoys simply keep their last good config. Each rejected version is
// acted on once: until the republish lands, the same NACK may be seen
// again while its culprits are already out.
func (c *Controller) suspectsLocked(r Rejection) []string {
	id := [2]string{r.TypeURL, r.Name}
	if c.sink.Current(r.TypeURL, r.Name) != r.Version || c.handled[id] == r.Version {
		return nil // an older version, or already dealt with
	}
	var fresh []string
	for _, key := range c.table.Keys() {
		p, _ := c.table.Get(key)
		if p.Err != nil || c.table.Status(key) != nil || !contributes(p, r.TypeURL, r.Name) {
			continue
		}
		if c.confirmed[key] != c.servedGen[key] {
			fresh = append(fresh, key)
		}
	}
	if len(fresh) > 0 {
		c.handled[id] = r.Version
	}
	return fresh
}

func contributes(p *translator.Piece, typeURL, name string) bool {
	hasCluster := func(n string) bool {
		return slices.ContainsFunc(p.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == n })
	}
	switch typeURL {
	case typeRoute:
		return slices.ContainsFunc(p.Routes, func(r *routev3.RouteConfiguration) bool { return r.Name == name })
	case typeScope:
		return slices.ContainsFunc(p.Scopes, func(s *routev3.ScopedRouteConfiguration) bool { return s.Name == name })
	case typeCluster, typeEndpoint:
		return hasCluster(name)
	case typeListener:
		return len(p.TLS) > 0
	case typeSecret:
		return slices.ContainsFunc(p.Secrets, func(s *tlsv3.Secret) bool { return s.Name == name })
	}
	return false
}

// rejectedPiece keeps what the ingress references (to notice fixes) and
// drops what it serves.
func rejectedPiece(p *translator.Piece, e *translator.Error) *translator.Piece {
	return &translator.Piece{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation, Age: p.Age,
		Services: p.Services, SecretRefs: p.SecretRefs, Err: e, Digest: p.Digest + "/" + e.Reason}
}

func typeName(typeURL string) string {
	switch typeURL {
	case typeCluster:
		return "cluster"
	case typeEndpoint:
		return "endpoints"
	case typeListener:
		return "listener"
	case typeRoute:
		return "route configuration"
	case typeScope:
		return "scope"
	case typeSecret:
		return "secret"
	}
	return typeURL
}

// injectNACK makes a translation Envoy rejects though it passes every
// check of ours (a domain listed twice in a virtual host): the e2e tests'
// way to prove that a NACK is isolated.
func injectNACK(p *translator.Piece) *translator.Piece {
	if p.Err != nil {
		return p
	}
	q := *p
	q.Routes = make([]*routev3.RouteConfiguration, len(p.Routes))
	for i, r := range p.Routes {
		c := proto.Clone(r).(*routev3.RouteConfiguration)
		for _, vh := range c.VirtualHosts {
			vh.Domains = append(vh.Domains, vh.Domains[0])
		}
		q.Routes[i] = c
	}
	q.Digest = p.Digest + "/nack"
	return &q
}

// observePropagation records how long a generation took from being seen
// to every Envoy serving it.
func (c *Controller) observePropagation(key string, since time.Time) {
	c.metrics.propagation.Observe(time.Since(since).Seconds())
}

// statusRejection says whether the leader marked this generation of the
// ingress as rejected by Envoy.
func statusRejection(ing *v1alpha1.Ingress) *translator.Error {
	cond := ing.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured)
	if cond == nil || !cond.IsFalse() || cond.Reason != ReasonEnvoyRejected || ing.Status.ObservedGeneration != ing.Generation {
		return nil
	}
	return &translator.Error{Reason: ReasonEnvoyRejected, Message: cond.Message}
}
