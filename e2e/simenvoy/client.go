package simenvoy

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// client is one simulated Envoy.
type client struct {
	fleet *Fleet
	i     int
	id    string
	delta bool

	mu          sync.Mutex
	thaw        chan struct{} // closed unless frozen
	connected   bool
	connectedAt time.Time
	readyAt     time.Time
	held        map[string]map[uint32]uint32 // type -> name -> version
	subs        map[string]map[uint32]bool   // EDS and RDS names asked for
	answered    map[string]bool              // types answered on this stream
	scoped      bool                         // subscribed to SRDS

	connects, responses, bytes, nacks, sinceConnect atomic.Int64
}

func (c *client) reset() {
	c.held, c.subs = map[string]map[uint32]uint32{}, map[string]map[uint32]bool{}
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.ScopedRouteType, resource.RouteType} {
		c.held[t] = map[uint32]uint32{}
	}
	c.subs[resource.EndpointType], c.subs[resource.RouteType] = map[uint32]bool{}, map[uint32]bool{}
}

// run keeps a stream open, reconnecting as the bootstrap has Envoy do:
// 250 ms doubling to 3 s, with jitter.
func (c *client) run(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		began := time.Now()
		open := c.sotwStream
		if c.delta {
			open = c.deltaStream
		}
		_ = c.stream(ctx, open) // it reconnects whatever ended the stream
		c.mu.Lock()
		c.connected = false
		c.mu.Unlock()
		if time.Since(began) > 10*time.Second {
			backoff = 250 * time.Millisecond
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, 3*time.Second)
	}
}

func (c *client) node() *core.Node { return &core.Node{Id: c.id, Cluster: c.fleet.opts.NodeCluster} }

// wait blocks while the client is frozen.
func (c *client) wait(ctx context.Context) error {
	c.mu.Lock()
	thaw := c.thaw
	c.mu.Unlock()
	select {
	case <-thaw:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *client) connectedNow() {
	c.connects.Add(1)
	c.sinceConnect.Store(0)
	c.mu.Lock()
	c.connected, c.connectedAt, c.answered = true, time.Now(), map[string]bool{}
	c.mu.Unlock()
}

// stream dials, opens a stream with open (which sends what Envoy asks for
// first and returns how to take one response), and takes responses until
// the stream ends.
func (c *client) stream(ctx context.Context, open func(context.Context, discovery.AggregatedDiscoveryServiceClient) (func() error, error)) error {
	cc, err := dial(c.fleet.opts.Addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	take, err := open(ctx, discovery.NewAggregatedDiscoveryServiceClient(cc))
	if err != nil {
		return err
	}
	c.connectedNow()
	for {
		if err := c.wait(ctx); err != nil {
			return err
		}
		if err := take(); err != nil {
			return err
		}
		c.readyCheck()
	}
}

// firstTypesLocked are the types a new stream asks for: the wildcard
// ones, SRDS once a listener used scopes, and EDS and RDS when some names
// are wanted.
func (c *client) firstTypesLocked() []string {
	var out []string
	for _, t := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.ScopedRouteType, resource.RouteType} {
		switch {
		case t == resource.ScopedRouteType && !c.scoped:
		case !wildcard[t] && len(c.subs[t]) == 0:
		default:
			out = append(out, t)
		}
	}
	return out
}

func (c *client) deltaStream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient) (func() error, error) {
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	first := true
	send := func(r *discovery.DeltaDiscoveryRequest) error {
		if first {
			r.Node, first = c.node(), false
		}
		return st.Send(r)
	}
	// What it asks for first, each type with the versions it holds.
	c.mu.Lock()
	var reqs []*discovery.DeltaDiscoveryRequest
	for _, t := range c.firstTypesLocked() {
		r := &discovery.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: c.versionsLocked(t)}
		if !wildcard[t] {
			r.ResourceNamesSubscribe = c.namesLocked(c.subs[t])
		}
		reqs = append(reqs, r)
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if err := send(r); err != nil {
			return nil, err
		}
	}
	return func() error {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		c.count(proto.Size(r))
		anys := make([]*anypb.Any, len(r.GetResources()))
		names := make([]string, len(r.GetResources()))
		versions := make([]string, len(r.GetResources()))
		for i, res := range r.GetResources() {
			anys[i], names[i], versions[i] = res.GetResource(), res.GetName(), res.GetVersion()
		}
		more, err := c.apply(r.GetTypeUrl(), anys, names, versions, r.GetRemovedResources(), false)
		ack := &discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}
		if err != nil {
			c.nacks.Add(1)
			ack.ErrorDetail = statusOf(err)
		}
		if err := send(ack); err != nil {
			return err
		}
		for t, names := range more {
			r := &discovery.DeltaDiscoveryRequest{TypeUrl: t}
			if !wildcard[t] {
				r.ResourceNamesSubscribe = names
			}
			if err := send(r); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func (c *client) sotwStream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient) (func() error, error) {
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	first := true
	version, nonce := map[string]string{}, map[string]string{}
	// request asks for t as of the last response accepted, or NACKs with
	// rejected.
	request := func(t string, rejected error) error {
		r := &discovery.DiscoveryRequest{TypeUrl: t, VersionInfo: version[t], ResponseNonce: nonce[t]}
		if rejected != nil {
			r.ErrorDetail = statusOf(rejected)
		}
		if first {
			r.Node, first = c.node(), false
		}
		if !wildcard[t] {
			c.mu.Lock()
			r.ResourceNames = c.namesLocked(c.subs[t])
			c.mu.Unlock()
		}
		return st.Send(r)
	}
	c.mu.Lock()
	types := c.firstTypesLocked()
	c.mu.Unlock()
	for _, t := range types {
		if err := request(t, nil); err != nil {
			return nil, err
		}
	}
	return func() error {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		c.count(proto.Size(r))
		t := r.GetTypeUrl()
		more, err := c.apply(t, r.GetResources(), nil, nil, nil, wildcard[t])
		nonce[t] = r.GetNonce()
		if err != nil {
			c.nacks.Add(1)
		} else {
			version[t] = r.GetVersionInfo()
		}
		if err := request(t, err); err != nil {
			return err
		}
		for t := range more {
			if err := request(t, nil); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func (c *client) count(n int) {
	c.responses.Add(1)
	c.bytes.Add(int64(n))
	c.sinceConnect.Add(int64(n))
}
