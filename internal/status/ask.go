package status

import (
	"cmp"
	"context"
	"fmt"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"sluice.dev/sluice/xds"
)

// maxAnswer bounds one CSDS answer: a large fleet's outgrows gRPC's 4 MiB.
const maxAnswer = 256 << 20

// Ask asks the replicas at addrs (host:port of their xDS servers) over
// CSDS, without resource contents. One address: its answer, which covers
// the whole fleet when the replica knows its peers. Several: each answers
// for the Envoys connected to it, and one that does not answer is listed
// as unreachable. creds nil means plaintext; ctx bounds the wait.
func Ask(ctx context.Context, addrs []string, creds credentials.TransportCredentials) (Fleet, error) {
	if len(addrs) == 0 {
		return Fleet{}, fmt.Errorf("no replica address")
	}
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	req := &statusv3.ClientStatusRequest{ExcludeResourceContents: true}
	if len(addrs) > 1 {
		req.Node = &core.Node{Id: "sluice-status", Cluster: xds.PeerCluster}
	}
	type answer struct {
		resp  *statusv3.ClientStatusResponse
		scope string
		err   error
	}
	answers := make([]answer, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			a := &answers[i]
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAnswer)))
			if err != nil {
				a.err = err
				return
			}
			defer conn.Close()
			var replica, scope string
			a.resp, replica, scope, a.err = xds.AskStatus(ctx, conn, req)
			if replica != "" {
				replica += " (" + addr + ")"
			}
			if scope != "" {
				a.scope = cmp.Or(replica, addr) + ": " + scope
			}
		})
	}
	wg.Wait()
	var resps []*statusv3.ClientStatusResponse
	var f Fleet
	for i, a := range answers {
		if a.err != nil {
			if len(addrs) == 1 {
				return Fleet{}, fmt.Errorf("CSDS of %s: %w", addrs[i], a.err)
			}
			f.Unreachable = append(f.Unreachable, Unreachable{Replica: addrs[i], Error: a.err.Error()})
			continue
		}
		resps = append(resps, a.resp)
		if a.scope != "" {
			f.Scope = append(f.Scope, a.scope)
		}
	}
	got := FromCSDS(resps...)
	got.Unreachable = append(f.Unreachable, got.Unreachable...)
	got.Scope = f.Scope
	return got, nil
}
