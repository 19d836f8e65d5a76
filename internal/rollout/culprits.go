package rollout

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/translator"
)

// ReasonEnvoyRejected marks an ingress whose resources an Envoy NACKed.
const ReasonEnvoyRejected = "EnvoyRejected"

// Culprit is an ingress whose current translation an Envoy rejected: it
// is now quarantined, and Piece is what the table should hold instead.
type Culprit struct {
	Key   string
	Piece *translator.Piece
	// Why says which rejection, for logs.
	Why string
}

// Culprits finds the ingresses behind the fleet's standing NACKs of what
// is served now and quarantines them with Envoy's error. Only ingresses
// not yet confirmed served by every Envoy are suspects: a served one is
// never blamed, and with no suspect the Envoys simply keep their last good
// config. Each rejected version is acted on once: until the republish
// lands, the same NACK may be seen again while its culprits are out.
//
// Only the leader should ask (its word goes into status, which every
// replica reads back; see StatusRejection). The caller holds whatever
// guards t.
func (b *Book) Culprits(t Table) []Culprit {
	rejs := b.fleet.Rejections()
	if len(rejs) == 0 {
		return nil
	}
	// What the fleet serves now of everything rejected or handled, asked
	// before taking the lock.
	ids := map[[2]string]bool{}
	for _, r := range rejs {
		ids[[2]string{r.TypeURL, r.Name}] = true
	}
	b.mu.Lock()
	for id := range b.handled {
		ids[id] = true
	}
	b.mu.Unlock()
	served := make(map[[2]string]string, len(ids))
	for id := range ids {
		served[id] = b.fleet.Served(id[0], id[1])
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// A handled version no longer served is history: if it comes back it
	// is judged anew.
	for id, v := range b.handled {
		if cur, ok := served[id]; ok && cur != v {
			delete(b.handled, id)
		}
	}
	var out []Culprit
	found := map[string]bool{}
	for _, r := range rejs {
		id := [2]string{r.TypeURL, r.Name}
		if served[id] != r.Version || b.handled[id] == r.Version {
			continue // an older version, or already dealt with
		}
		suspects := b.suspectsLocked(t, r)
		if len(suspects) > 0 {
			b.handled[id] = r.Version
		}
		for _, key := range suspects {
			if found[key] {
				continue
			}
			found[key] = true
			p, _ := t.Get(key)
			ing := b.getLocked(key)
			e := &translator.Error{Reason: ReasonEnvoyRejected,
				Message: fmt.Sprintf("Envoy %s rejected %s %q: %s", r.Node, TypeName(r.TypeURL), r.Name, r.Error)}
			ing.quarantine = &quarantined{digest: p.Digest, err: e}
			out = append(out, Culprit{Key: key, Piece: RejectedPiece(p, e),
				Why: fmt.Sprintf("%s: %s %s at %s, %s", key, TypeName(r.TypeURL), r.Name, r.Version, ing)})
		}
	}
	return out
}

// suspectsLocked lists the ingresses feeding the rejected resource whose
// current translation is not yet confirmed served. A route configuration
// names its ingress; other resources may be shared, so every ingress is
// looked at.
func (b *Book) suspectsLocked(t Table, r Rejection) []string {
	keys := t.Keys()
	if r.TypeURL == resource.RouteType {
		keys = nil
		if key, ok := translator.RoutesOwner(r.Name); ok {
			keys = []string{key}
		}
	}
	var out []string
	for _, key := range keys {
		p, ok := t.Get(key)
		if !ok || p.Err != nil || t.Status(key) != nil || !contributes(p, r.TypeURL, r.Name) {
			continue
		}
		if ing, ok := b.ingresses[key]; ok && ing.confirmedGen != ing.publishedGen {
			out = append(out, key)
		}
	}
	return out
}

func contributes(p *translator.Piece, typeURL, name string) bool {
	switch typeURL {
	case resource.RouteType:
		return slices.ContainsFunc(p.Routes, func(r *routev3.RouteConfiguration) bool { return r.Name == name })
	case resource.ScopedRouteType:
		return slices.ContainsFunc(p.Scopes, func(s *routev3.ScopedRouteConfiguration) bool { return s.Name == name })
	case resource.ClusterType, resource.EndpointType:
		return slices.ContainsFunc(p.Clusters, func(c *clusterv3.Cluster) bool { return c.Name == name })
	case resource.ListenerType:
		return len(p.TLS) > 0
	case resource.SecretType:
		return slices.ContainsFunc(p.Secrets, func(s *tlsv3.Secret) bool { return s.Name == name })
	}
	return false
}

// RejectedPiece keeps what the ingress references (to notice fixes) and
// drops what it serves.
func RejectedPiece(p *translator.Piece, e *translator.Error) *translator.Piece {
	return &translator.Piece{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation, Age: p.Age,
		Services: p.Services, SecretRefs: p.SecretRefs, Err: e, Digest: p.Digest + "/" + e.Reason}
}

// StatusRejection says whether the leader marked this generation of the
// ingress as rejected by Envoy, so every replica leaves it out too.
func StatusRejection(ing *v1alpha1.Ingress) *translator.Error {
	cond := ing.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured)
	if cond == nil || !cond.IsFalse() || cond.Reason != ReasonEnvoyRejected || ing.Status.ObservedGeneration != ing.Generation {
		return nil
	}
	return &translator.Error{Reason: ReasonEnvoyRejected, Message: cond.Message}
}

// TypeName is a resource type as people name it.
func TypeName(typeURL string) string {
	switch typeURL {
	case resource.ClusterType:
		return "cluster"
	case resource.EndpointType:
		return "endpoints"
	case resource.ListenerType:
		return "listener"
	case resource.RouteType:
		return "route configuration"
	case resource.ScopedRouteType:
		return "scope"
	case resource.SecretType:
		return "secret"
	}
	return typeURL
}
