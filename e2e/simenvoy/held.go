package simenvoy

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// What a client does with what it gets: decode, hold, and ask for what
// the new resources name.

// apply decodes and records a response. names and versions are delta's
// (nil for SotW, whose version is per response: the resource's name is
// read from it). whole says the response is the type's whole set. It
// returns what to ask for next: type -> names newly wanted.
func (c *client) apply(typeURL string, anys []*anypb.Any, names, versions, removed []string, whole bool) (map[string][]string, error) {
	more := map[string][]string{}
	now := time.Now()
	type got struct {
		name, version uint32
	}
	var set []got
	var firstErr error
	var wantEDS, wantRDS []string
	scoped := false
	for i, a := range anys {
		msg, err := decode(typeURL, a)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		name := ""
		if names != nil {
			name = names[i]
		} else {
			name = nameOf(msg)
		}
		version := ""
		if versions != nil {
			version = versions[i]
		}
		set = append(set, got{c.fleet.names.id(name), c.fleet.names.id(version)})
		switch m := msg.(type) {
		case *clusterv3.Cluster:
			if m.GetType() == clusterv3.Cluster_EDS {
				wantEDS = append(wantEDS, clusterv3EDSName(m))
			}
		case *listenerv3.Listener:
			scoped = scoped || usesScopedRoutes(m)
		case *routev3.ScopedRouteConfiguration:
			wantRDS = append(wantRDS, m.GetRouteConfigurationName())
		}
	}
	c.mu.Lock()
	held := c.held[typeURL]
	if whole {
		held = map[uint32]uint32{}
		c.held[typeURL] = held
	}
	for _, g := range set {
		held[g.name] = g.version
	}
	for _, n := range removed {
		delete(held, c.fleet.names.id(n))
	}
	if typeURL != "" {
		c.answered[typeURL] = true
	}
	newNames := func(t string, want []string) {
		for _, n := range want {
			id := c.fleet.names.id(n)
			if !c.subs[t][id] {
				c.subs[t][id] = true
				more[t] = append(more[t], n)
			}
		}
	}
	newNames(resource.EndpointType, wantEDS)
	newNames(resource.RouteType, wantRDS)
	if scoped && !c.scoped {
		c.scoped = true
		more[resource.ScopedRouteType] = nil
	}
	c.mu.Unlock()
	if c.fleet.watching() {
		for _, g := range set {
			c.fleet.arrived(c.i, typeURL, g.name, now)
		}
	}
	return more, firstErr
}

// readyCheck marks the client ready once every type it asks for has
// answered on this stream (or was held from before) and it holds every
// name it asked for.
func (c *client) readyCheck() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readyAt.After(c.connectedAt) {
		return
	}
	for _, t := range []string{resource.ClusterType, resource.ListenerType} {
		if !c.answered[t] && len(c.held[t]) == 0 {
			return
		}
	}
	if !c.scoped || (!c.answered[resource.ScopedRouteType] && len(c.held[resource.ScopedRouteType]) == 0) {
		return
	}
	for t, names := range c.subs {
		for id := range names {
			if _, ok := c.held[t][id]; !ok {
				return
			}
		}
	}
	c.readyAt = time.Now()
}

func (c *client) versionsLocked(t string) map[string]string {
	if len(c.held[t]) == 0 {
		return nil
	}
	out := make(map[string]string, len(c.held[t]))
	for n, v := range c.held[t] {
		out[c.fleet.names.str(n)] = c.fleet.names.str(v)
	}
	return out
}

func (c *client) namesLocked(set map[uint32]bool) []string {
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, c.fleet.names.str(id))
	}
	return out
}

// decode unmarshals a resource into its type, as Envoy would before
// using it.
func decode(typeURL string, a *anypb.Any) (proto.Message, error) {
	if a.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("a %s in a %s response", a.GetTypeUrl(), typeURL)
	}
	var m proto.Message
	switch typeURL {
	case resource.ClusterType:
		m = &clusterv3.Cluster{}
	case resource.EndpointType:
		m = &endpointv3.ClusterLoadAssignment{}
	case resource.ListenerType:
		m = &listenerv3.Listener{}
	case resource.ScopedRouteType:
		m = &routev3.ScopedRouteConfiguration{}
	case resource.RouteType:
		m = &routev3.RouteConfiguration{}
	case resource.SecretType:
		m = &tlsv3.Secret{}
	default:
		return nil, fmt.Errorf("unexpected type %s", typeURL)
	}
	return m, a.UnmarshalTo(m)
}

func nameOf(m proto.Message) string {
	if cla, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		return cla.GetClusterName()
	}
	return m.(interface{ GetName() string }).GetName()
}

func clusterv3EDSName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// usesScopedRoutes: a connection manager of l routes by SRDS.
func usesScopedRoutes(l *listenerv3.Listener) bool {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var h hcmv3.HttpConnectionManager
			if f.GetTypedConfig().UnmarshalTo(&h) == nil && h.GetScopedRoutes() != nil {
				return true
			}
		}
	}
	return false
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
