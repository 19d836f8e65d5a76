package xds

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/translator"
)

// Publish serves a translator output and the assignments of its EDS
// clusters as the full state (the controller's Sink).
func (s *Server) Publish(out *translator.Output, endpoints map[string]*endpointv3.ClusterLoadAssignment) error {
	snap := Snapshot{
		Clusters:  make(map[string]proto.Message, len(out.Clusters)),
		Endpoints: make(map[string]proto.Message, len(endpoints)),
		Listeners: make(map[string]proto.Message, len(out.Listeners)),
		Routes:    make(map[string]proto.Message, len(out.Routes)),
		Secrets:   make(map[string]proto.Message, len(out.Secrets)),
	}
	for _, c := range out.Clusters {
		snap.Clusters[c.GetName()] = c
	}
	for name, e := range endpoints {
		snap.Endpoints[name] = e
	}
	for _, l := range out.Listeners {
		snap.Listeners[l.GetName()] = l
	}
	for _, r := range out.Routes {
		snap.Routes[r.GetName()] = r
	}
	for _, sec := range out.Secrets {
		snap.Secrets[sec.GetName()] = sec
	}
	return s.SetSnapshot(snap)
}

// PublishEndpoints serves changed assignments only (the controller's Sink).
func (s *Server) PublishEndpoints(endpoints map[string]*endpointv3.ClusterLoadAssignment) error {
	return s.SetEndpoints(endpoints)
}
