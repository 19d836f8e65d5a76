package xds

import "maps"

// What a node ACKed of one type. A delta stream in sync would otherwise
// keep a map entry per resource, per node: at a thousand Envoys most of
// the controller's memory. So once it has ACKed something, its state is
// relative to the served table: the node holds, of each name it wants,
// what was served at seq at; except the names in ex. A node's exceptions
// are the names it has not ACKed yet (held back by a barrier, in flight,
// rejected) and the few a subscription change left; a stuck node's grow
// with what changed since, never past what is and was served.
//
// Before its first ACK, and for SotW streams (each request restates their
// whole subscription), at is 0 and ex holds everything. Peers' views keep
// the map they read over CSDS (plain).
type ackedState struct {
	at    uint64
	ex    map[string]holding
	plain map[string]string
}

// ackedOf is the version of name the node ACKed, if any.
func (ts *typeState) ackedOf(name string) (string, bool) {
	if ts.acked.plain != nil {
		v, ok := ts.acked.plain[name]
		return v, ok
	}
	h, ok := ts.acked.ex[name]
	if !ok && ts.acked.at != 0 && ts.wants(name) {
		h = ts.table.at(name, ts.acked.at)
	}
	return h.version, h.has
}

// ackedAll is every version the node ACKed, by name: for CSDS, which
// copies it anyway.
func (ts *typeState) ackedAll() map[string]string {
	if ts.acked.plain != nil {
		return maps.Clone(ts.acked.plain)
	}
	out := map[string]string{}
	if ts.acked.at != 0 {
		add := func(n string) {
			if h := ts.table.at(n, ts.acked.at); h.has {
				out[n] = h.version
			}
		}
		if ts.wildcard {
			for n := range ts.table.versions {
				add(n)
			}
			ts.table.since(ts.acked.at, func(n string, _ holding) { add(n) })
		} else {
			for n := range ts.subscribed {
				add(n)
			}
		}
	}
	for n, h := range ts.acked.ex {
		if h.has {
			out[n] = h.version
		} else {
			delete(out, n)
		}
	}
	return out
}

// setAcked records that the node holds h of name.
func (ts *typeState) setAcked(name string, h holding) {
	rule := holding{}
	if ts.acked.at != 0 && ts.wants(name) {
		rule = ts.table.current(name)
	}
	ts.acked.ex = except(ts.acked.ex, name, h, rule)
}

// ackedTruth is what a node in the relative form (at != 0) holds of every
// name that may differ from what is served now: those changed since at,
// and its exceptions.
func (ts *typeState) ackedTruth() map[string]holding {
	out := make(map[string]holding, len(ts.acked.ex))
	ts.table.since(ts.acked.at, func(n string, was holding) {
		if ts.wants(n) {
			out[n] = was
		} else {
			out[n] = holding{}
		}
	})
	maps.Copy(out, ts.acked.ex)
	return out
}

// rebase moves the node's state to what is served now, with truth (from
// ackedTruth, changed as the caller learned) as its exceptions where they
// differ. SotW streams stay at 0.
func (ts *typeState) rebase(truth map[string]holding) {
	if ts.delta {
		ts.acked.at = ts.table.seq
	}
	if ts.acked.at == 0 {
		ts.acked.ex = truth
		for n, h := range truth {
			if !h.has {
				delete(truth, n)
			}
		}
		return
	}
	ts.acked.ex = nil
	for n, h := range truth {
		ts.setAcked(n, h)
	}
}

// ackApply records an ACK of p.
func (ts *typeState) ackApply(p *sentResponse) {
	if ts.acked.at == 0 && !p.full {
		// The full map and p, moved to the relative form at the cost of
		// what the node holds (delta), or p written into the full map:
		// a thousand Envoys connecting would otherwise each pay for every
		// name served on every ACK.
		for _, n := range p.removed {
			delete(ts.acked.ex, n)
		}
		if ts.delta && ts.table.seq != 0 {
			ts.toRelative(p.resources)
			return
		}
		for n, v := range p.resources {
			ts.setAckedRaw(n, holding{version: v, has: true})
		}
		return
	}
	truth := map[string]holding{} // p.full: the node holds p and nothing else
	if !p.full {
		truth = ts.ackedTruth()
	}
	for n, v := range p.resources {
		truth[n] = holding{version: v, has: true}
	}
	for _, n := range p.removed {
		truth[n] = holding{}
	}
	ts.rebase(truth)
}

// subscriptionChanged records that name became wanted or not: a name
// wanted anew is held only if it was already, one no longer wanted is let
// go.
func (ts *typeState) subscriptionChanged(name string) {
	_, known := ts.acked.ex[name]
	switch {
	case !ts.wants(name):
		delete(ts.acked.ex, name)
	case ts.acked.at != 0 && !known:
		ts.setAckedRaw(name, holding{}) // the rule would say it holds it
	}
}

// setAckedRaw records h as an exception whatever the rule says.
func (ts *typeState) setAckedRaw(name string, h holding) {
	if ts.acked.ex == nil {
		ts.acked.ex = map[string]holding{}
	}
	ts.acked.ex[name] = h
}

// setWildcard turns the wildcard on or off: what the node holds is first
// written out in full, as the rule it was relative to changes.
func (ts *typeState) setWildcard(on bool) {
	if on == ts.wildcard {
		return
	}
	if ts.acked.at != 0 {
		all := ts.ackedAll()
		ts.acked = ackedState{ex: make(map[string]holding, len(all))}
		for n, v := range all {
			ts.acked.ex[n] = holding{version: v, has: true}
		}
	}
	ts.wildcard = on
}

// tableLocked is the served table of a type.
func (t *tracker) tableLocked(typeURL string) *versionLog {
	s := t.served[typeURL]
	if s == nil {
		s = newVersionLog()
		t.served[typeURL] = s
	}
	return s
}

// serve records what the server serves of a type now (a version per name,
// "" for none). Before the log drops changes, the nodes whose state refers
// to them are moved past them.
func (t *tracker) serve(typeURL string, versions map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.tableLocked(typeURL)
	for n, v := range versions {
		s.set(n, v)
	}
	start := s.trimPoint()
	if start == 0 {
		return
	}
	for _, st := range t.streams {
		if ts := st.types[typeURL]; ts != nil && ts.acked.at != 0 && ts.acked.at < start {
			ts.rebase(ts.ackedTruth())
		}
	}
	s.trim()
}

// servedVersionLocked is the version of a resource served now ("" for
// none).
func (t *tracker) servedVersionLocked(typeURL, name string) string {
	return t.tableLocked(typeURL).versions[name]
}

// toRelative moves a node from its full map (at 0) and the versions just
// ACKed to the relative form, at the cost of the names it holds: the names
// it wants that are served but that it lacks are looked for only when the
// counts say some are missing.
func (ts *typeState) toRelative(acked map[string]string) {
	held := ts.acked.ex
	ts.acked = ackedState{at: ts.table.seq}
	covered := 0 // names held that are wanted and served
	visit := func(n string, h holding) {
		if cur := ts.table.current(n); cur.has && ts.wants(n) {
			covered++
			if cur == h {
				return
			}
		}
		ts.setAckedRaw(n, h)
	}
	for n, v := range acked {
		visit(n, holding{version: v, has: true})
	}
	for n, h := range held {
		if _, ok := acked[n]; !ok {
			visit(n, h)
		}
	}
	wanted := 0 // names wanted and served
	if ts.wildcard {
		wanted = len(ts.table.versions)
	} else {
		for n := range ts.subscribed {
			if _, ok := ts.table.versions[n]; ok {
				wanted++
			}
		}
	}
	if covered == wanted {
		return
	}
	lack := func(n string) {
		_, wasHeld := held[n]
		if _, isAcked := acked[n]; !wasHeld && !isAcked {
			ts.setAckedRaw(n, holding{})
		}
	}
	if ts.wildcard {
		for n := range ts.table.versions {
			lack(n)
		}
		return
	}
	for n := range ts.subscribed {
		if _, ok := ts.table.versions[n]; ok {
			lack(n)
		}
	}
}
