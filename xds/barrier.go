package xds

import (
	"time"
)

// Make-before-break per Envoy. A round logs everything at once; what must
// reach an Envoy only after something else (routes after the clusters they
// use, removals after the routes that stopped using them) is logged with a
// barrier, and a delta stream gets a name whose latest change has a
// barrier only once its Envoy has passed it; the other names go on. So an
// Envoy that is slow, or stopped reading, holds back its own stream and
// nobody else's, and a barrier never waits behind another.

// barrier is what an Envoy must hold before its stream gets what was logged
// with it.
type barrier struct {
	refs     []ref
	deadline time.Time // from then on, everyone has passed it
	after    *barrier  // passed only once this one is too (nil: none)
	chain    int       // warmedChain or heldChain
	seq      uint64    // grows along a chain
}

// The two chains of barriers: the clusters routing waits for, and the
// routing removals wait for.
const (
	warmedChain = iota
	heldChain
	chains
)

// forgetPassed cuts the chain of barriers before the first whose deadline
// is before t: those are passed by everyone. Deadlines grow along a
// chain.
func (b *barrier) forgetPassed(t time.Time) {
	for ; b != nil; b = b.after {
		if b.after != nil && b.after.deadline.Before(t) {
			b.after = nil
		}
	}
}

// forgetPassed is barrier.forgetPassed under the tracker's lock: passes
// walks the chains under it while the update loop cuts them.
func (t *tracker) forgetPassed(b *barrier, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b.forgetPassed(now)
}

// passer says whether a node has passed a barrier.
type passer func(node string, b *barrier) bool

// passes: the node holds (or has rejected) each of the barrier's resources
// that is still served at that version (or, removed, still not served),
// and has passed the barrier before it. A resource served at another
// version since was superseded: a later barrier asks for that one. Past
// its deadline, everyone has passed a barrier and those before it.
func (s *Server) passes(node string, b *barrier) bool {
	return s.tracker.passes(node, b, s.now())
}

// passes is Server.passes. What a node has passed is remembered per chain
// (the newest barrier's seq), so asking again costs a map lookup; a node
// that connects or leaves starts over, as a restarted Envoy holds nothing.
func (t *tracker) passes(node string, b *barrier, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.nodes[node]
	if e == nil {
		return true // gone: nothing to wait for
	}
	var v *nodeView
	for x := b; x != nil && x.seq > e.passed[x.chain]; x = x.after {
		if now.After(x.deadline) {
			break // and so are those before it
		}
		if v == nil {
			view := e.view()
			v = &view
		}
		for _, r := range x.refs {
			if t.servedVersionLocked(r.typeURL, r.name) != r.version {
				continue // superseded (a removed one served again, too)
			}
			if !v.holds(r) {
				return false
			}
		}
	}
	e.passed[b.chain] = max(e.passed[b.chain], b.seq)
	return true
}

// recheckLoop answers the watches a barrier held back for the nodes that
// ACKed, NACKed, connected or left since it last looked, and every held
// back watch as barriers age out; so an ACK costs the watches of its own
// node, not the fleet's.
func (s *Server) recheckLoop() {
	ch, cancel := s.tracker.subscribe()
	defer cancel()
	tick := time.NewTicker(s.opts.AckTimeout / 20)
	defer tick.Stop()
	for {
		var nodes map[string]struct{} // nil: all
		select {
		case <-s.ctx.Done():
			return
		case <-ch:
			nodes = s.tracker.takeMoved()
		case <-tick.C:
		}
		for _, t := range allTypes {
			s.caches[t].recheck(nodes)
		}
	}
}

// recheck answers the open watches a barrier held back for nodes (nil:
// every node), now that they may have passed it.
func (c *deltaCache) recheck(nodes map[string]struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); now.Sub(c.swept) > c.sweepEvery {
		c.swept = now
		for n, b := range c.needs {
			if now.After(b.deadline) {
				delete(c.needs, n)
			}
		}
	}
	if len(c.heldBack) == 0 {
		return
	}
	if nodes == nil {
		for _, ws := range c.heldBack {
			for w := range ws {
				c.answerLocked(w)
			}
		}
		return
	}
	for n := range nodes {
		for w := range c.heldBack[n] {
			c.answerLocked(w)
		}
	}
}

// setHeldBackLocked files w among the watches held back for its node, or
// takes it out.
func (c *deltaCache) setHeldBackLocked(w *deltaWatch, held bool) {
	node := w.req.GetNode().GetId()
	ws := c.heldBack[node]
	if !held {
		delete(ws, w)
		if len(ws) == 0 {
			delete(c.heldBack, node)
		}
		return
	}
	if ws == nil {
		ws = map[*deltaWatch]struct{}{}
		c.heldBack[node] = ws
	}
	ws[w] = struct{}{}
}
