package xds

import (
	"context"
	"errors"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// csds serves envoy.service.status.v3.ClientStatusDiscoveryService: for
// every Envoy of the fleet (see fleetStatus), each resource it was sent or
// asked for, with the version it ACKed and the last error it reported.
type csds struct {
	statusv3.UnimplementedClientStatusDiscoveryServiceServer
	s *Server
}

func (c *csds) FetchClientStatus(ctx context.Context, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
	resp, scope := c.s.fleetStatus(ctx, req)
	_ = grpc.SetHeader(ctx, metadata.Pairs(replicaHeader, c.s.opts.Replica, scopeHeader, scope))
	return resp, nil
}

func (c *csds) StreamClientStatus(stream statusv3.ClientStatusDiscoveryService_StreamClientStatusServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, scope := c.s.fleetStatus(stream.Context(), req)
		// Headers go out once, with the first answer.
		_ = stream.SetHeader(metadata.Pairs(replicaHeader, c.s.opts.Replica, scopeHeader, scope))
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// clientStatus builds the CSDS answer for the Envoys connected to this
// replica, each tagged with the replica's name. Node matchers filter on
// node id (metadata matchers are not supported and match every node).
func (s *Server) clientStatus(req *statusv3.ClientStatusRequest) *statusv3.ClientStatusResponse {
	// Served versions are read under the lock, one at a time: the state
	// changes in place.
	served := func(typeURL, name string) (entry, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		e, ok := s.served[typeURL][name]
		return e, ok
	}
	out := &statusv3.ClientStatusResponse{}
	for _, n := range s.tracker.snapshot() {
		if !matchNode(req.GetNodeMatchers(), n.ID) {
			continue
		}
		md := map[string]string{ReplicaKey: s.opts.Replica}
		if m, ok := s.memory.get(n.ID); ok {
			maps.Copy(md, m.metadata())
		}
		cc := &statusv3.ClientConfig{Node: withMetadata(n.node, md)}
		for _, typeURL := range slices.Sorted(maps.Keys(n.Types)) {
			ts := n.Types[typeURL]
			names := map[string]bool{}
			for name := range ts.Acked {
				names[name] = true
			}
			for name := range ts.Errors {
				names[name] = true
			}
			for _, name := range ts.Subscribed {
				names[name] = true
			}
			for _, name := range slices.Sorted(maps.Keys(names)) {
				cc.GenericXdsConfigs = append(cc.GenericXdsConfigs,
					genericConfig(typeURL, name, ts, served, !req.GetExcludeResourceContents()))
			}
		}
		out.Config = append(out.Config, cc)
	}
	return out
}

func genericConfig(typeURL, name string, ts TypeStatus, served func(typeURL, name string) (entry, bool), contents bool) *statusv3.ClientConfig_GenericXdsConfig {
	g := &statusv3.ClientConfig_GenericXdsConfig{TypeUrl: typeURL, Name: name}
	acked, isAcked := ts.Acked[name]
	cur, isServed := served(typeURL, name)
	g.VersionInfo = acked
	switch {
	case isAcked:
		g.ClientStatus = adminv3.ClientResourceStatus_ACKED
	case isServed:
		g.ClientStatus = adminv3.ClientResourceStatus_REQUESTED
	default:
		g.ClientStatus = adminv3.ClientResourceStatus_DOES_NOT_EXIST
	}
	switch {
	case isAcked && isServed && acked == cur.version:
		g.ConfigStatus = statusv3.ConfigStatus_SYNCED
	case isAcked:
		g.ConfigStatus = statusv3.ConfigStatus_STALE
	default:
		g.ConfigStatus = statusv3.ConfigStatus_NOT_SENT
	}
	if e, ok := ts.Errors[name]; ok {
		g.ClientStatus = adminv3.ClientResourceStatus_NACKED
		g.ConfigStatus = statusv3.ConfigStatus_ERROR
		g.ErrorState = &adminv3.UpdateFailureState{
			Details:           e.Error,
			VersionInfo:       e.Version,
			LastUpdateAttempt: timestamppb.New(e.Time),
		}
	}
	if !ts.LastUpdated.IsZero() {
		g.LastUpdated = timestamppb.New(ts.LastUpdated)
	}
	if contents && isAcked && isServed && acked == cur.version {
		if a, err := anypb.New(cur.msg); err == nil {
			g.XdsConfig = a
		}
	}
	return g
}

func matchNode(ms []*matcherv3.NodeMatcher, id string) bool {
	if len(ms) == 0 {
		return true
	}
	for _, m := range ms {
		if m.GetNodeId() == nil || matchString(m.GetNodeId(), id) {
			return true
		}
	}
	return false
}

func matchString(m *matcherv3.StringMatcher, s string) bool {
	if m.GetIgnoreCase() {
		s = strings.ToLower(s)
	}
	low := func(p string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(p)
		}
		return p
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return s == low(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(s, low(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(s, low(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(s, low(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}
