// Package simenvoy simulates many Envoys for benchmarks: each is a real
// ADS client, delta or state-of-the-world, that subscribes as Envoy does
// with Sluice's configuration (CDS and LDS wildcard; SRDS once a listener
// uses scoped routes; RDS for every route configuration a scope names; EDS
// for each EDS cluster), decodes every resource it gets into its type,
// ACKs each response with its nonce (NACKs one it cannot decode), and
// reconnects with the bootstrap's backoff, sending what it holds as
// initial_resource_versions (delta) or its last versions (SotW).
//
// It keeps what each client holds cheaply: names and versions are interned
// once for the whole fleet, and a client holds a map of small integers per
// type. It does not model listener secrets (SDS) or Envoy's warming.
package simenvoy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// Options configure a fleet.
type Options struct {
	Addr        string // the xDS server, host:port
	NodeCluster string // the node cluster the clients announce; default sluice-gateway
	Prefix      string // node ids are Prefix-0, Prefix-1...; default sim
	// SotWEvery makes every SotWEvery-th client state-of-the-world (0: all
	// delta).
	SotWEvery int
}

// Fleet is a set of simulated Envoys.
type Fleet struct {
	opts  Options
	names interner
	ctx   context.Context

	mu      sync.Mutex
	clients []*client
	watched map[key]*watch
}

type key struct {
	typeURL string
	name    uint32
}

// watch times one resource's arrival at each client.
type watch struct {
	since time.Time
	at    map[int]time.Duration // client -> when it first held the resource
}

// Start connects n clients; they run until ctx ends.
func Start(ctx context.Context, opts Options, n int) *Fleet {
	if opts.NodeCluster == "" {
		opts.NodeCluster = "sluice-gateway"
	}
	if opts.Prefix == "" {
		opts.Prefix = "sim"
	}
	f := &Fleet{opts: opts, ctx: ctx, watched: map[key]*watch{}}
	for range n {
		f.Join()
	}
	return f
}

// Join connects one more client and returns its index.
func (f *Fleet) Join() int {
	f.mu.Lock()
	i := len(f.clients)
	c := &client{fleet: f, i: i, id: fmt.Sprintf("%s-%d", f.opts.Prefix, i),
		delta: f.opts.SotWEvery == 0 || i%f.opts.SotWEvery != f.opts.SotWEvery-1,
		thaw:  make(chan struct{})}
	close(c.thaw)
	c.reset()
	f.clients = append(f.clients, c)
	f.mu.Unlock()
	go c.run(f.ctx)
	return i
}

// Expect starts timing a resource: Held then says how many clients hold it
// and when the last of them got it.
func (f *Fleet) Expect(typeURL, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watched[key{typeURL, f.names.id(name)}] = &watch{since: time.Now(), at: map[int]time.Duration{}}
}

// Held reports how many clients, of those not in skip, hold the expected
// resource, and the longest time one of them took since Expect.
func (f *Fleet) Held(typeURL, name string, skip ...int) (n int, slowest time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.watched[key{typeURL, f.names.id(name)}]
	if w == nil {
		return 0, 0
	}
	for i, d := range w.at {
		if !contains(skip, i) {
			n++
			slowest = max(slowest, d)
		}
	}
	return n, slowest
}

// arrived records that client i holds name (the caller holds no lock).
func (f *Fleet) arrived(i int, typeURL string, name uint32, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w := f.watched[key{typeURL, name}]; w != nil {
		if _, ok := w.at[i]; !ok {
			w.at[i] = now.Sub(w.since)
		}
	}
}

func (f *Fleet) watching() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watched) > 0
}

// Freeze makes client i stop reading its stream (as a stopped process
// would), until Thaw.
func (f *Fleet) Freeze(i int) {
	c := f.client(i)
	c.mu.Lock()
	c.thaw = make(chan struct{})
	c.mu.Unlock()
}

// Thaw lets client i read again.
func (f *Fleet) Thaw(i int) {
	c := f.client(i)
	c.mu.Lock()
	select {
	case <-c.thaw:
	default:
		close(c.thaw)
	}
	c.mu.Unlock()
}

func (f *Fleet) client(i int) *client {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clients[i]
}

// Stats is the fleet's counters.
type Stats struct {
	Clients, Connected int
	Connects           int64 // streams opened, first ones included
	Responses, Bytes   int64 // received, over every client
	NACKs              int64 // responses a client could not decode
	// Ready: clients that have had a response for every type they
	// subscribe to and hold every name they asked for by name.
	Ready int
	// ReadyAfter is, for clients ready, the longest time from their last
	// (re)connect to being ready.
	ReadyAfter time.Duration
}

// Stats reads the counters.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	cs := append([]*client(nil), f.clients...)
	f.mu.Unlock()
	s := Stats{Clients: len(cs)}
	for _, c := range cs {
		s.Connects += c.connects.Load()
		s.Responses += c.responses.Load()
		s.Bytes += c.bytes.Load()
		s.NACKs += c.nacks.Load()
		c.mu.Lock()
		if c.connected {
			s.Connected++
		}
		if c.connected && c.readyAt.After(c.connectedAt) {
			s.Ready++
			s.ReadyAfter = max(s.ReadyAfter, c.readyAt.Sub(c.connectedAt))
		}
		c.mu.Unlock()
	}
	return s
}

// ClientReady is how long client i took from its last (re)connect to
// ready, or false while it is not.
func (f *Fleet) ClientReady(i int) (time.Duration, bool) {
	c := f.client(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.connected || !c.readyAt.After(c.connectedAt) {
		return 0, false
	}
	return c.readyAt.Sub(c.connectedAt), true
}

// ClientBytes is what client i received since it last connected.
func (f *Fleet) ClientBytes(i int) int64 { return f.client(i).sinceConnect.Load() }

// interner numbers names and versions once for the whole fleet.
type interner struct {
	mu  sync.RWMutex
	ids map[string]uint32
	s   []string
}

func (t *interner) id(s string) uint32 {
	t.mu.RLock()
	id, ok := t.ids[s]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[s]; ok {
		return id
	}
	if t.ids == nil {
		t.ids = map[string]uint32{}
	}
	id = uint32(len(t.s))
	t.ids[s] = id
	t.s = append(t.s, s)
	return id
}

func (t *interner) str(id uint32) string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.s[id]
}

func contains(xs []int, x int) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
}

// The types in the order Envoy asks for them, and which are wildcard.
var wildcard = map[string]bool{resource.ClusterType: true, resource.ListenerType: true, resource.ScopedRouteType: true}

// statusOf is a NACK's error detail.
func statusOf(err error) *rpcstatus.Status {
	return &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}
