package xds

import "slices"

// setAppliedLocked records that generation gen's listeners (refs) are
// served. A few recent rounds are kept, so that an Envoy holding
// any of them counts as synced even while newer rounds go out.
func (s *Server) setAppliedLocked(gen uint64, refs []ref) {
	a := &s.applied
	if n := len(a.list); n > 0 && a.list[n-1].gen == gen {
		return
	}
	a.list = append(a.list, appliedRound{gen: gen, refs: refs})
	if len(a.list) > keepRounds {
		a.list = slices.Clone(a.list[len(a.list)-keepRounds:])
	}
	a.version++
	s.tracker.notify()
}

const keepRounds = 16

type appliedRound struct {
	gen  uint64
	refs []ref
}

// Generation returns the generation of the latest SetSnapshot: 1 for the
// first, counting up. Read it after SetSnapshot to learn which generation
// carries a change (calls must not race for that).
func (s *Server) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.desiredGen
}

// Synced splits the connected Envoys (by node id, sorted) into those that
// hold the listeners of generation gen or a later one, and those behind
// (including any that rejected them). Clusters go out before routes (see the package
// documentation), so a synced Envoy has the clusters too. The last few
// rounds count, so constant updates do not keep every Envoy behind.
// Subscribe signals when the answer may have changed.
func (s *Server) Synced(gen uint64) (synced, behind []string) {
	s.mu.Lock()
	rounds := s.applied // its list is only appended to or replaced: the copy stays valid
	s.mu.Unlock()
	synced, behind = s.tracker.synced(gen, rounds, s.peerViews())
	return s.serving(synced), s.serving(behind)
}

// serving leaves out the Envoys that turn traffic away under their
// overload manager (memory.go): they serve nothing, so they neither make
// an ingress Ready nor hold every ingress back.
func (s *Server) serving(ids []string) []string {
	return slices.DeleteFunc(ids, func(id string) bool { return s.Refusing(id) != "" })
}

// Refusing says why an Envoy, ours or a peer's, turns traffic away under
// its overload manager, as it last reported; "" if it does not.
func (s *Server) Refusing(node string) string {
	if why := s.memory.refusingOf(node); why != "" {
		return why
	}
	s.mu.Lock()
	peers := s.peers
	s.mu.Unlock()
	if peers == nil {
		return ""
	}
	return peers.refusingOf(node)
}

// peerViews are the Envoys of the other replicas, none without peers.
func (s *Server) peerViews() peerSet {
	s.mu.Lock()
	peers := s.peers
	s.mu.Unlock()
	if peers == nil {
		return peerSet{}
	}
	return peers.views()
}

// Ref names one resource at one version (see Version).
type Ref struct{ TypeURL, Name, Version string }

// Behind lists the connected Envoys, and the peers' ones, that do not
// hold every one of refs at exactly its version: an ingress's own route
// configurations and scopes, say. It costs the number of refs, not of
// resources served.
func (s *Server) Behind(refs []Ref) []string {
	rs := make([]ref, len(refs))
	for i, r := range refs {
		rs[i] = ref{typeURL: r.TypeURL, name: r.Name, version: r.Version}
	}
	return s.serving(s.tracker.behind(rs, s.peerViews()))
}

// SetPeers makes Synced also count the Envoys of the other replicas that
// p watches (see Peers), and CSDS answer for them too.
func (s *Server) SetPeers(p *Peers) {
	p.mu.Lock()
	p.onChange = s.tracker.notify
	p.self = s.opts.Replica
	p.mu.Unlock()
	s.mu.Lock()
	s.peers = p
	s.mu.Unlock()
}

// listenerRefs are the listeners of st. Routes and scopes belong to one
// ingress each and are checked per ingress (Behind); listeners are shared,
// so readiness checks them per generation (Synced).
func listenerRefs(st state) []ref {
	var out []ref
	for name, e := range st[listenerType] {
		out = append(out, ref{typeURL: listenerType, name: name, version: e.version})
	}
	return out
}
