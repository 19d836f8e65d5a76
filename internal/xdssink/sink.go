// Package xdssink adapts the xDS server to the controller: it hands each
// Build's change to the server and answers what Envoys hold.
package xdssink

import (
	"maps"
	"slices"
	"sort"
	"sync"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/internal/controller"
	"sluice.dev/sluice/internal/rollout"
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
	set := xds.Snapshot{Endpoints: make(map[string]proto.Message, len(eps))}
	for name, cla := range eps {
		set.Endpoints[name] = cla
	}
	e := out.Edits
	if e.All || e.Secrets {
		set.Secrets = byName(out.Secrets)
	}
	if e.All || e.Listeners {
		set.Listeners = byName(out.Listeners)
	}
	if e.All {
		set.Clusters, set.Routes, set.Scopes = byName(out.Clusters), byName(out.Routes), byName(out.Scopes)
		if err := k.s.SetSnapshot(set); err != nil {
			return 0, err
		}
	} else {
		remove := map[string][]string{}
		set.Routes = edited(out.Routes, e.Routes, xds.RouteType, remove)
		set.Scopes = edited(out.Scopes, e.Scopes, xds.ScopeType, remove)
		set.Clusters = edited(out.Clusters, e.Clusters, xds.ClusterType, remove)
		remove[xds.EndpointType] = remove[xds.ClusterType]
		if e.Secrets {
			remove[xds.SecretType] = gone(k.secrets, set.Secrets)
		}
		if e.Listeners {
			remove[xds.ListenerType] = gone(k.listeners, set.Listeners)
		}
		if err := k.s.Update(set, remove); err != nil {
			return 0, err
		}
	}
	// The short lists go whole; what left them is known from the last ones.
	if e.All || e.Secrets {
		k.secrets = slices.Collect(maps.Keys(set.Secrets))
	}
	if e.All || e.Listeners {
		k.listeners = slices.Collect(maps.Keys(set.Listeners))
	}
	return k.s.Generation(), nil
}

// edited picks from list (sorted by name) the resources named in changed;
// a name not in list goes to remove.
func edited[T types.Resource](list []T, changed []string, typeURL string, remove map[string][]string) map[string]proto.Message {
	out := make(map[string]proto.Message, len(changed))
	for _, n := range changed {
		i := sort.Search(len(list), func(i int) bool { return cache.GetResourceName(list[i]) >= n })
		if i < len(list) && cache.GetResourceName(list[i]) == n {
			out[n] = list[i]
		} else {
			remove[typeURL] = append(remove[typeURL], n)
		}
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

func byName[T types.Resource](in []T) map[string]proto.Message {
	out := make(map[string]proto.Message, len(in))
	for _, m := range in {
		out[cache.GetResourceName(m)] = m
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

// Served is the version of a resource now served.
func (k *Sink) Served(typeURL, name string) string { return k.s.Served(typeURL, name) }

// Rejections are those of our Envoys and of the peers' (a node on both
// counts once).
func (k *Sink) Rejections() []rollout.Rejection {
	var peers []xds.Rejection
	if k.peers != nil {
		peers = k.peers.Nacks()
	}
	return mergeRejections(k.s.Rejections(), k.s.NodeIDs(), peers)
}

// mergeRejections adds to ours the peers' rejections by nodes not ours: a
// node that moved here may still be in a peer's last report, and what it
// says now is what we saw.
func mergeRejections(ours []xds.Rejection, ourNodes []string, peers []xds.Rejection) []rollout.Rejection {
	out := make([]rollout.Rejection, 0, len(ours)+len(peers))
	for _, r := range ours {
		out = append(out, rollout.Rejection(r))
	}
	for _, r := range peers {
		if !slices.Contains(ourNodes, r.Node) {
			out = append(out, rollout.Rejection(r))
		}
	}
	return out
}
