package xds

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
)

// Type URLs of the resources Sluice serves.
const (
	clusterType  = resource.ClusterType
	endpointType = resource.EndpointType
	listenerType = resource.ListenerType
	routeType    = resource.RouteType
	scopeType    = resource.ScopedRouteType
	secretType   = resource.SecretType
)

// allTypes is the make-before-break order: clusters and their endpoints, then
// secrets, then the listeners, scopes and route configurations that use
// them (Envoy asks for a scope's route configuration once it has the scope).
var allTypes = []string{clusterType, endpointType, secretType, listenerType, scopeType, routeType}

func typeOrder(typeURL string) int {
	for i, t := range allTypes {
		if t == typeURL {
			return i
		}
	}
	return len(allTypes)
}

// Snapshot is the full state to serve, each map keyed by resource name. The
// values must be the resource's own type (*clusterv3.Cluster,
// *endpointv3.ClusterLoadAssignment, *listenerv3.Listener,
// *routev3.RouteConfiguration, *routev3.ScopedRouteConfiguration,
// *tlsv3.Secret), and must not be modified after they are handed over: the
// server keeps and serves them as they are.
type Snapshot struct {
	Clusters  map[string]proto.Message
	Endpoints map[string]proto.Message
	Listeners map[string]proto.Message
	Routes    map[string]proto.Message
	Scopes    map[string]proto.Message
	Secrets   map[string]proto.Message
}

func (s *Snapshot) byType() map[string]map[string]proto.Message {
	return map[string]map[string]proto.Message{
		clusterType:  s.Clusters,
		endpointType: s.Endpoints,
		listenerType: s.Listeners,
		routeType:    s.Routes,
		scopeType:    s.Scopes,
		secretType:   s.Secrets,
	}
}

// Version is the version Sluice gives a resource: the hex SHA-256 of its
// deterministic protobuf encoding. It is the same function go-control-plane's
// LinearCache uses for delta xDS, so it is what Envoys report back, and the
// same content has the same version on every replica and after restarts.
func Version(m proto.Message) string {
	b, err := cache.MarshalResource(m)
	if err != nil {
		return ""
	}
	return cache.HashResource(b)
}

// entry is one resource as served.
type entry struct {
	msg     proto.Message
	version string
	size    int
}

// state is a full set of resources by type URL and name, changed in place
// under the server's lock.
type state map[string]map[string]entry

func checkType(typeURL string, m proto.Message) bool {
	switch m.(type) {
	case *clusterv3.Cluster:
		return typeURL == clusterType
	case *endpointv3.ClusterLoadAssignment:
		return typeURL == endpointType
	case *listenerv3.Listener:
		return typeURL == listenerType
	case *routev3.RouteConfiguration:
		return typeURL == routeType
	case *routev3.ScopedRouteConfiguration:
		return typeURL == scopeType
	case *tlsv3.Secret:
		return typeURL == secretType
	}
	return false
}

// buildEntries checks and versions one type's resources. A resource whose
// message pointer is already known (in prev) keeps its version without being
// encoded again, which makes re-sending an unchanged, cached translation cheap.
func buildEntries(typeURL string, in map[string]proto.Message, prev ...map[string]entry) (map[string]entry, error) {
	out := make(map[string]entry, len(in))
	for name, m := range in {
		if m == nil {
			return nil, fmt.Errorf("%s %q: nil resource", typeLabel(typeURL), name)
		}
		if !checkType(typeURL, m) {
			return nil, fmt.Errorf("%s %q: wrong message type %T", typeLabel(typeURL), name, m)
		}
		if got := cache.GetResourceName(m.(types.Resource)); got != name {
			return nil, fmt.Errorf("%s %q: resource is named %q", typeLabel(typeURL), name, got)
		}
		if e, ok := lookup(prev, name); ok && e.msg == m {
			out[name] = e
			continue
		}
		b, err := cache.MarshalResource(m)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", typeLabel(typeURL), name, err)
		}
		out[name] = entry{msg: m, version: cache.HashResource(b), size: len(b)}
	}
	return out, nil
}

func lookup(maps []map[string]entry, name string) (entry, bool) {
	for _, m := range maps {
		if e, ok := m[name]; ok {
			return e, true
		}
	}
	return entry{}, false
}

// edsName is the EDS service name of an EDS cluster ("" for others).
func edsName(name string, e entry) string {
	if e.msg == nil {
		return ""
	}
	refs := cache.GetResourceReferences(map[string]types.ResourceWithTTL{name: {Resource: e.msg}})
	for eds := range refs[endpointType] {
		return eds
	}
	return ""
}

// Type URLs, for Acked and Served.
const (
	ClusterType  = clusterType
	EndpointType = endpointType
	ListenerType = listenerType
	RouteType    = routeType
	ScopeType    = scopeType
	SecretType   = secretType
)
