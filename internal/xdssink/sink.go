// Package xdssink adapts the xDS server to the controller: it hands each
// Build's change to the server and answers what Envoys hold.
package xdssink

import (
	"slices"
	"sort"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/internal/controller"
	"sluice.dev/sluice/translator"
	"sluice.dev/sluice/xds"
)

// Sink is the controller's view of an xds.Server and its peers.
type Sink struct {
	s     *xds.Server
	peers *xds.Peers // nil without --peers

	mu sync.Mutex
	// Names of the short lists sent whole when they change.
	secrets, listeners []string
}

var _ controller.Sink = (*Sink)(nil)

// New adapts s; peers may be nil.
func New(s *xds.Server, peers *xds.Peers) *Sink { return &Sink{s: s, peers: peers} }

// Publish hands over what the Build changed (everything on a table's first
// Build), and eps, the assignments of the clusters it added or changed.
func (k *Sink) Publish(out *translator.Output, eps map[string]*endpointv3.ClusterLoadAssignment) (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	set := xds.Snapshot{
		Secrets:   byName(out.Secrets, func(s *tlsv3.Secret) string { return s.Name }),
		Listeners: byName(out.Listeners, func(l *listenerv3.Listener) string { return l.Name }),
		Endpoints: make(map[string]proto.Message, len(eps)),
	}
	for name, cla := range eps {
		set.Endpoints[name] = cla
	}
	if out.Edits.All {
		set.Clusters = byName(out.Clusters, func(c *clusterv3.Cluster) string { return c.Name })
		set.Routes = byName(out.Routes, func(r *routev3.RouteConfiguration) string { return r.Name })
		set.Scopes = byName(out.Scopes, func(s *routev3.ScopedRouteConfiguration) string { return s.Name })
		if err := k.s.SetSnapshot(set); err != nil {
			return 0, err
		}
		k.secrets, k.listeners = names(out.Secrets), names(out.Listeners)
		return k.s.Generation(), nil
	}
	remove := map[string][]string{}
	set.Routes = edited(out.Routes, out.Edits.Routes, xds.RouteType, remove)
	set.Scopes = edited(out.Scopes, out.Edits.Scopes, xds.ScopeType, remove)
	set.Clusters = edited(out.Clusters, out.Edits.Clusters, xds.ClusterType, remove)
	remove[xds.EndpointType] = remove[xds.ClusterType]
	if !out.Edits.Secrets {
		set.Secrets = nil
	} else {
		remove[xds.SecretType] = gone(k.secrets, set.Secrets)
	}
	if !out.Edits.Listeners {
		set.Listeners = nil
	} else {
		remove[xds.ListenerType] = gone(k.listeners, set.Listeners)
	}
	if err := k.s.Update(set, remove); err != nil {
		return 0, err
	}
	if out.Edits.Secrets {
		k.secrets = names(out.Secrets)
	}
	if out.Edits.Listeners {
		k.listeners = names(out.Listeners)
	}
	return k.s.Generation(), nil
}

// edited picks from list (sorted by name) the resources named in changed;
// a name not in list goes to remove.
func edited[T proto.Message](list []T, changed []string, typeURL string, remove map[string][]string) map[string]proto.Message {
	out := make(map[string]proto.Message, len(changed))
	for _, n := range changed {
		i := sort.Search(len(list), func(i int) bool { return nameOf(list[i]) >= n })
		if i < len(list) && nameOf(list[i]) == n {
			out[n] = list[i]
		} else {
			remove[typeURL] = append(remove[typeURL], n)
		}
	}
	return out
}

func nameOf(m proto.Message) string {
	switch v := m.(type) {
	case *routev3.RouteConfiguration:
		return v.Name
	case *routev3.ScopedRouteConfiguration:
		return v.Name
	case *clusterv3.Cluster:
		return v.Name
	case *listenerv3.Listener:
		return v.Name
	case *tlsv3.Secret:
		return v.Name
	}
	return ""
}

func names[T proto.Message](list []T) []string {
	out := make([]string, len(list))
	for i, m := range list {
		out[i] = nameOf(m)
	}
	return out
}

func gone(before []string, now map[string]proto.Message) []string {
	var out []string
	for _, n := range before {
		if _, ok := now[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

func byName[T proto.Message](in []T, name func(T) string) map[string]proto.Message {
	out := make(map[string]proto.Message, len(in))
	for _, m := range in {
		out[name(m)] = m
	}
	return out
}

// PublishEndpoints hands over changed assignments only.
func (k *Sink) PublishEndpoints(eps map[string]*endpointv3.ClusterLoadAssignment) error {
	return k.s.SetEndpoints(eps)
}

// Behind checks the shared listeners by generation and the ingress's own
// route configurations and scopes by content, which costs one ingress
// however many are served (versions of what was published are the
// server's, not encoded again).
func (k *Sink) Behind(gen uint64, p *translator.Piece) []string {
	refs := make([]xds.Ref, 0, len(p.Routes)+len(p.Scopes))
	for _, r := range p.Routes {
		refs = append(refs, xds.Ref{TypeURL: xds.RouteType, Name: r.Name, Version: k.s.VersionOf(xds.RouteType, r.Name, r)})
	}
	for _, sc := range p.Scopes {
		refs = append(refs, xds.Ref{TypeURL: xds.ScopeType, Name: sc.Name, Version: k.s.VersionOf(xds.ScopeType, sc.Name, sc)})
	}
	_, behind := k.s.Synced(gen)
	return slices.Compact(slices.Sorted(slices.Values(append(behind, k.s.Behind(refs)...))))
}

// Subscribe signals when Behind's or Rejections' answer may have changed.
func (k *Sink) Subscribe() (<-chan struct{}, func()) { return k.s.Subscribe() }

// Current is the version of a resource now served.
func (k *Sink) Current(typeURL, name string) string { return k.s.Served(typeURL, name) }

// Rejections are those of our Envoys and of the peers' (a node on both
// counts once).
func (k *Sink) Rejections() []controller.Rejection {
	var out []controller.Rejection
	ours := map[string]bool{}
	for _, id := range k.s.NodeIDs() {
		ours[id] = true
	}
	for _, r := range k.s.Rejections() {
		out = append(out, controller.Rejection{Node: r.Node, TypeURL: r.TypeURL, Name: r.Name, Version: r.Version, Error: r.Error})
	}
	if k.peers != nil {
		for _, n := range k.peers.Nacks() {
			if !ours[n.Node] {
				out = append(out, controller.Rejection(n))
			}
		}
	}
	return out
}
