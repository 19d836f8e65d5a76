package xds

import (
	"context"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// Peers watches the Envoys connected to the other controller replicas
// through their CSDS, so that readiness counts every Envoy of the gateway
// whichever replica it talks to. Replicas serve the same content under the
// same versions, so a peer's Envoy is synced by the same test as ours.
type Peers struct {
	log      *zap.Logger
	addrs    []string // host:port; a host may resolve to several replicas
	interval time.Duration
	creds    credentials.TransportCredentials

	mu    sync.Mutex
	nodes map[string]map[string]map[string]string // node id -> type -> name -> acked version
	seen  map[string]*nodeView                    // nodes as readiness reads them, built once per answer
	seenV uint64                                  // counts the answers seen was built for
	// refusing: node id -> the overload actions by which it turns traffic
	// away, as its replica heard it (memory.go)
	refusing map[string]string
	nacks    []Rejection
	conns    map[string]*grpc.ClientConn
	// onChange and self are set by the Server: onChange wakes readiness
	// checks, self is this replica's name, sent with every request.
	onChange func()
	self     string
}

// NewPeers polls the CSDS of addrs every interval. An address may name
// this replica too: a node connected here counts as ours.
func NewPeers(log *zap.Logger, addrs []string, interval time.Duration, creds credentials.TransportCredentials) *Peers {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	return &Peers{log: log, addrs: addrs, interval: interval, creds: creds, nodes: map[string]map[string]map[string]string{}, conns: map[string]*grpc.ClientConn{}}
}

// Run polls until ctx is done.
func (p *Peers) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	defer func() {
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	}()
	for {
		p.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *Peers) poll(ctx context.Context) {
	next := map[string]map[string]map[string]string{}
	refusing := map[string]string{}
	var nacks []Rejection
	for _, a := range p.fetch(ctx, &statusv3.ClientStatusRequest{ExcludeResourceContents: true}, time.Second) {
		if a.err != nil {
			p.log.Debug("peer CSDS failed", zap.String("peer", a.target), zap.Error(a.err))
			continue
		}
		for _, cc := range a.resp.GetConfig() {
			id := cc.GetNode().GetId()
			if id == "" {
				continue
			}
			if why := cc.GetNode().GetMetadata().GetFields()[RefusingKey].GetStringValue(); why != "" {
				refusing[id] = why
			}
			types := map[string]map[string]string{}
			for _, g := range cc.GetGenericXdsConfigs() {
				if e := g.GetErrorState(); e != nil {
					nacks = append(nacks, Rejection{Node: id, TypeURL: g.GetTypeUrl(), Name: g.GetName(),
						Version: e.GetVersionInfo(), Error: e.GetDetails()})
				}
				if g.GetClientStatus() != adminv3.ClientResourceStatus_ACKED {
					continue
				}
				if types[g.GetTypeUrl()] == nil {
					types[g.GetTypeUrl()] = map[string]string{}
				}
				types[g.GetTypeUrl()][g.GetName()] = g.GetVersionInfo()
			}
			next[id] = types
		}
	}
	p.mu.Lock()
	changed := !maps.EqualFunc(p.nodes, next, func(a, b map[string]map[string]string) bool {
		return maps.EqualFunc(a, b, func(x, y map[string]string) bool { return maps.Equal(x, y) })
	})
	changed = changed || !slices.Equal(p.nacks, nacks) || !maps.Equal(p.refusing, refusing)
	p.nodes, p.nacks, p.refusing = next, nacks, refusing
	if changed {
		p.seen = nil
	}
	notify := p.onChange
	p.mu.Unlock()
	if changed && notify != nil {
		notify()
	}
}

// peerAnswer is one replica's answer to a CSDS request for its own Envoys.
type peerAnswer struct {
	target  string // host:port asked
	replica string // the name it answered with; "" if it did not answer
	resp    *statusv3.ClientStatusResponse
	err     error
}

// fetch asks every replica, at once, for the status of the Envoys connected
// to it (a request marked as a peer's is answered without fanning out
// again), each bounded by timeout. Answers come in target order.
func (p *Peers) fetch(ctx context.Context, req *statusv3.ClientStatusRequest, timeout time.Duration) []peerAnswer {
	req = proto.Clone(req).(*statusv3.ClientStatusRequest)
	p.mu.Lock()
	req.Node = &core.Node{Id: p.self, Cluster: PeerCluster}
	p.mu.Unlock()
	targets := p.resolve(ctx)
	out := make([]peerAnswer, len(targets))
	var wg sync.WaitGroup
	for i, target := range targets {
		out[i].target = target
		wg.Go(func() {
			a := &out[i]
			conn, err := p.conn(target)
			if err != nil {
				a.err = err
				return
			}
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			a.resp, a.replica, _, a.err = AskStatus(cctx, conn, req)
		})
	}
	wg.Wait()
	return out
}

// resolve expands each address to every replica behind its name.
func (p *Peers) resolve(ctx context.Context) []string {
	var out []string
	for _, a := range p.addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if net.ParseIP(host) != nil {
			out = append(out, a)
			continue
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (p *Peers) conn(target string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[target]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(target, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return nil, err
	}
	p.conns[target] = c
	return c, nil
}

// views returns the peers' nodes as node views, for the synced test.
// views are the peers' nodes, shared by every caller until the peers
// answer something new: readiness reads them on every Envoy event.
func (p *Peers) views() peerSet {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen != nil {
		return peerSet{views: p.seen, version: p.seenV}
	}
	p.seen = make(map[string]*nodeView, len(p.nodes))
	p.seenV++
	for id, types := range p.nodes {
		v := &nodeView{types: map[string]*typeState{}}
		for typeURL, acked := range types {
			v.types[typeURL] = &typeState{acked: ackedState{plain: acked}}
		}
		p.seen[id] = v
	}
	return peerSet{views: p.seen, version: p.seenV}
}

func (p *Peers) refusingOf(node string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refusing[node]
}

// Nacks lists the standing rejections the peers reported last.
func (p *Peers) Nacks() []Rejection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.nacks)
}
