package xds

import (
	"context"
	"errors"
	"sort"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// gate holds every watch until the first full state is in the caches. An
// Envoy that connects before that gets nothing (rather than an empty
// configuration that would drop its live routes); its parked watches are
// handed to the real caches, type by type in xDS order, when the gate opens.
type gate struct {
	inner cache.Cache

	mu     sync.Mutex
	open   bool
	seq    int
	parked map[*parkedWatch]struct{}
}

type parkedWatch struct {
	seq    int
	req    *cache.Request
	dreq   *cache.DeltaRequest
	sub    cache.Subscription
	ch     chan cache.Response
	dch    chan cache.DeltaResponse
	cancel func() // the inner watch's cancel, once forwarded
	done   bool
}

var _ cache.Cache = (*gate)(nil)

func newGate(inner cache.Cache) *gate {
	return &gate{inner: inner, parked: map[*parkedWatch]struct{}{}}
}

func (g *gate) CreateWatch(req *cache.Request, sub cache.Subscription, ch chan cache.Response) (func(), error) {
	g.mu.Lock()
	if g.open {
		g.mu.Unlock()
		return g.inner.CreateWatch(req, sub, ch)
	}
	defer g.mu.Unlock()
	return g.park(&parkedWatch{req: req, sub: sub, ch: ch}), nil
}

func (g *gate) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, ch chan cache.DeltaResponse) (func(), error) {
	g.mu.Lock()
	if g.open {
		g.mu.Unlock()
		return g.inner.CreateDeltaWatch(req, sub, ch)
	}
	defer g.mu.Unlock()
	return g.park(&parkedWatch{dreq: req, sub: sub, dch: ch}), nil
}

// park must be called with g.mu held.
func (g *gate) park(p *parkedWatch) func() {
	g.seq++
	p.seq = g.seq
	g.parked[p] = struct{}{}
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if p.done {
			return
		}
		p.done = true
		delete(g.parked, p)
		if p.cancel != nil {
			p.cancel()
		}
	}
}

func (g *gate) Fetch(ctx context.Context, req *cache.Request) (cache.Response, error) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	if !open {
		return nil, errors.New("xds: no configuration yet")
	}
	return g.inner.Fetch(ctx, req)
}

func (g *gate) isOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.open
}

// openGate forwards the parked watches to the caches. The lock is held while
// doing so, so a watch cancelled concurrently is either never forwarded or
// cancelled in the inner cache too. Each stream has at most one watch per
// type, so the stream channels have room for the answers sent here.
func (g *gate) openGate(onErr func(error)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		return
	}
	g.open = true
	ws := make([]*parkedWatch, 0, len(g.parked))
	for p := range g.parked {
		ws = append(ws, p)
	}
	sort.Slice(ws, func(i, j int) bool {
		oi, oj := typeOrder(ws[i].typeURL()), typeOrder(ws[j].typeURL())
		if oi != oj {
			return oi < oj
		}
		return ws[i].seq < ws[j].seq
	})
	for _, p := range ws {
		var err error
		if p.req != nil {
			p.cancel, err = g.inner.CreateWatch(p.req, p.sub, p.ch)
		} else {
			p.cancel, err = g.inner.CreateDeltaWatch(p.dreq, p.sub, p.dch)
		}
		if err != nil {
			onErr(err)
		}
	}
	// Parked entries stay referenced by their cancel funcs only.
	g.parked = nil
}

func (p *parkedWatch) typeURL() string {
	if p.req != nil {
		return p.req.GetTypeUrl()
	}
	return p.dreq.GetTypeUrl()
}
