package xds

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// CSDS across replicas. Each Envoy holds one ADS stream to one replica, so
// one replica alone knows only its own Envoys. A replica that knows its
// peers answers CSDS for the whole fleet: it asks every peer for the Envoys
// connected to it, with a request marked as a peer's (node cluster
// PeerCluster), which the peer answers without asking further.
const (
	// PeerCluster is the node cluster of a CSDS request one replica sends
	// another: answer for your own Envoys only.
	PeerCluster = "sluice.dev/peer"
	// ReplicaKey, in the node metadata of each CSDS entry, names the
	// replica the Envoy is connected to (or, with ReplicaErrorKey, a replica
	// that could not be asked).
	ReplicaKey = "sluice.dev/replica"
	// ReplicaErrorKey says why a replica could not be asked; its entry
	// has no node id and no resources.
	ReplicaErrorKey = "sluice.dev/replica-error"

	// gRPC response headers of every CSDS answer: the answering replica's
	// name, and what the answer covers.
	replicaHeader = "sluice-replica"
	scopeHeader   = "sluice-csds-scope"

	peerTimeout = 2 * time.Second
)

// AskStatus sends req to one replica's CSDS over conn and returns its
// answer, the name the replica answered with and what the answer covers
// (from the headers every answer carries; "" if absent).
func AskStatus(ctx context.Context, conn grpc.ClientConnInterface, req *statusv3.ClientStatusRequest) (_ *statusv3.ClientStatusResponse, replica, scope string, _ error) {
	var hdr metadata.MD
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(conn).FetchClientStatus(ctx, req, grpc.Header(&hdr))
	first := func(k string) string {
		if v := hdr.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	return resp, first(replicaHeader), first(scopeHeader), err
}

// fleetStatus answers a CSDS request: for every Envoy of the fleet once,
// sorted by node id, then one entry per replica that could not be asked.
// scope says what the answer covers.
func (s *Server) fleetStatus(ctx context.Context, req *statusv3.ClientStatusRequest) (_ *statusv3.ClientStatusResponse, scope string) {
	local := s.clientStatus(req)
	s.mu.Lock()
	peers := s.peers
	s.mu.Unlock()
	switch {
	case peers == nil:
		return local, "replica: the Envoys of this replica only (it has no --peers)"
	case req.GetNode().GetCluster() == PeerCluster:
		return local, "replica: the Envoys of this replica, asked by a peer"
	}
	byID := map[string]*statusv3.ClientConfig{}
	for _, cc := range local.GetConfig() {
		byID[cc.GetNode().GetId()] = cc
	}
	var down []*statusv3.ClientConfig
	asked := 0
	for _, a := range peers.fetch(ctx, req, peerTimeout) {
		if a.err != nil {
			down = append(down, &statusv3.ClientConfig{Node: withMetadata(&core.Node{},
				map[string]string{ReplicaKey: a.target, ReplicaErrorKey: a.err.Error()})})
			continue
		}
		if a.replica == s.opts.Replica {
			continue // ourselves, under one of the peer addresses
		}
		asked++
		// An Envoy that just moved may be on two replicas for a moment:
		// ours wins, then the first peer's.
		for _, cc := range a.resp.GetConfig() {
			if id := cc.GetNode().GetId(); byID[id] == nil {
				byID[id] = cc
			}
		}
	}
	out := &statusv3.ClientStatusResponse{}
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		out.Config = append(out.Config, byID[id])
	}
	out.Config = append(out.Config, down...)
	return out, fmt.Sprintf("fleet: the Envoys of %d replicas (%d unreachable)", asked+1, len(down))
}

// withMetadata returns a copy of n with the given string fields added to
// its metadata.
func withMetadata(n *core.Node, fields map[string]string) *core.Node {
	n = proto.Clone(cmp.Or(n, &core.Node{})).(*core.Node)
	if n.Metadata == nil {
		n.Metadata = &structpb.Struct{}
	}
	if n.Metadata.Fields == nil {
		n.Metadata.Fields = map[string]*structpb.Value{}
	}
	for k, v := range fields {
		n.Metadata.Fields[k] = structpb.NewStringValue(v)
	}
	return n
}
