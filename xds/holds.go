package xds

import (
	"slices"
	"strings"
)

// Whether connected nodes hold given resource versions: barriers ask it
// per node (barrier.go), and readiness per ingress.

// ref is a resource version a node must hold. For a cluster, eds names
// the endpoints it needs too.
type ref struct {
	typeURL, name, version string
	eds                    string
}

// syncedMemo is, for one node, the newest applied round it holds exactly,
// as of its last move and the server's rounds: a node that did not move is
// not looked at again.
type syncedMemo struct {
	movedAt, rounds uint64 // what it was computed at (rounds: appliedRounds.version)
	held            bool
	gen             uint64
}

// appliedRounds are the rounds whose listeners count as synced, oldest
// first, and a version that grows whenever the list changes.
type appliedRounds struct {
	list    []appliedRound
	version uint64
}

// newest is the generation of the newest round v holds exactly.
func (v *nodeView) newest(rounds []appliedRound) (gen uint64, held bool) {
	for i := len(rounds) - 1; i >= 0; i-- {
		if v.holdsExactly(rounds[i].refs) {
			return rounds[i].gen, true
		}
	}
	return 0, false
}

// synced splits nodes, ours and the peers' (others), into those holding
// exactly (not rejecting) every ref of a round of generation gen or later,
// and the others. A node of ours costs a lookup unless it moved since it
// was last asked, so a check costs the fleet's size, not its state.
func (t *tracker) synced(gen uint64, rounds appliedRounds, peers peerSet) (synced, behind []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	split := func(id string, g uint64, held bool) {
		if held && g >= gen {
			synced = append(synced, id)
		} else {
			behind = append(behind, id)
		}
	}
	for id, e := range t.nodes {
		m := &e.synced
		if m.movedAt != e.movedAt || m.rounds != rounds.version {
			v := e.view()
			m.gen, m.held = v.newest(rounds.list)
			m.movedAt, m.rounds = e.movedAt, rounds.version
		}
		split(id, m.gen, m.held)
	}
	for id, v := range peers.views {
		if _, ours := t.nodes[id]; !ours {
			g, held := v.newest(rounds.list)
			split(id, g, held)
		}
	}
	slices.Sort(synced)
	slices.Sort(behind)
	return synced, behind
}

// peerSet is the peers' nodes as readiness reads them, and a version that
// changes whenever they do.
type peerSet struct {
	views   map[string]*nodeView
	version uint64
}

// behindMemo is behind's last answer for one set of refs: our nodes behind
// as of an epoch, the peers' as of their version.
type behindMemo struct {
	epoch, peers uint64
	ours         map[string]struct{}
	theirs       []string
}

// maxBehindMemos bounds behind's memory: past it, all are dropped.
const maxBehindMemos = 4096

func refsKey(refs []ref) string {
	var b strings.Builder
	for _, r := range refs {
		b.WriteString(r.typeURL)
		b.WriteByte(0)
		b.WriteString(r.name)
		b.WriteByte(0)
		b.WriteString(r.version)
		b.WriteByte(0)
	}
	return b.String()
}

// behind lists the nodes, ours and the peers', that do not hold every one
// of refs exactly. The answer is remembered per refs, and asking again
// looks only at the nodes that moved since: a KIngress waiting for one
// stuck Envoy costs, per Envoy event, a pass over the nodes' epochs, not
// over what they hold.
func (t *tracker) behind(refs []ref, peers peerSet) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := refsKey(refs)
	m := t.behinds[key]
	if m == nil {
		if len(t.behinds) >= maxBehindMemos {
			clear(t.behinds)
		}
		m = &behindMemo{ours: map[string]struct{}{}, peers: peers.version + 1}
		t.behinds[key] = m
		for id, e := range t.nodes {
			if v := e.view(); !v.holdsExactly(refs) {
				m.ours[id] = struct{}{}
			}
		}
	} else if m.epoch != t.epoch {
		for id, e := range t.nodes {
			if e.movedAt <= m.epoch {
				continue // it did not move: its answer stands
			}
			if v := e.view(); v.holdsExactly(refs) {
				delete(m.ours, id)
			} else {
				m.ours[id] = struct{}{}
			}
		}
		for id := range m.ours {
			if t.nodes[id] == nil {
				delete(m.ours, id) // gone
			}
		}
	}
	m.epoch = t.epoch
	if m.peers != peers.version {
		m.peers, m.theirs = peers.version, nil
		for id, v := range peers.views {
			if !v.holdsExactly(refs) {
				m.theirs = append(m.theirs, id)
			}
		}
	}
	out := make([]string, 0, len(m.ours)+len(m.theirs))
	for id := range m.ours {
		out = append(out, id)
	}
	for _, id := range m.theirs {
		if t.nodes[id] == nil {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (v *nodeView) holdsExactly(refs []ref) bool {
	for _, r := range refs {
		ts := v.types[r.typeURL]
		if ts == nil {
			return false
		}
		if v, _ := ts.ackedOf(r.name); v != r.version {
			return false
		}
	}
	return true
}

func (v *nodeView) holds(r ref) bool {
	ts := v.types[r.typeURL]
	if r.version == "" {
		// Removed: the node must have let it go.
		if ts == nil {
			return true
		}
		_, has := ts.ackedOf(r.name)
		return !has
	}
	if r.typeURL == routeType || r.typeURL == scopeType {
		// Envoy asks for scopes and route configurations once it has the
		// listener using them, so a node that takes listeners must get
		// there.
		if v.types[listenerType] == nil {
			return true
		}
		if ts == nil {
			return false
		}
	} else if ts == nil || !ts.wants(r.name) {
		return true
	}
	if e, ok := ts.errors[r.name]; ok && e.Version == r.version {
		return true // rejected: waiting longer will not help
	}
	if v, _ := ts.ackedOf(r.name); v != r.version {
		return false
	}
	if r.eds == "" {
		return true
	}
	ets := v.types[endpointType]
	if ets == nil {
		return false
	}
	_, acked := ets.ackedOf(r.eds)
	_, failed := ets.errors[r.eds]
	return acked || failed
}
