package xds

import (
	"slices"
)

// Whether connected nodes hold given resource versions: barriers ask it
// per node (barrier.go), and readiness per ingress.

// ref is a resource version a node must hold. For a cluster, eds names
// the endpoints it needs too.
type ref struct {
	typeURL, name, version string
	eds                    string
}

// synced splits nodes into those holding exactly (not rejecting) every ref
// of at least one of rounds, and the others.
func (t *tracker) synced(rounds [][]ref, others map[string]*nodeView) (synced, behind []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	views := t.viewsLocked()
	for id, v := range others {
		if _, ours := views[id]; !ours {
			views[id] = v
		}
	}
	for id, v := range views {
		if slices.ContainsFunc(rounds, v.holdsExactly) {
			synced = append(synced, id)
		} else {
			behind = append(behind, id)
		}
	}
	slices.Sort(synced)
	slices.Sort(behind)
	return synced, behind
}

func (v *nodeView) holdsExactly(refs []ref) bool {
	for _, r := range refs {
		ts := v.types[r.typeURL]
		if ts == nil || ts.acked[r.name] != r.version {
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
		_, has := ts.acked[r.name]
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
	if ts.acked[r.name] != r.version {
		return false
	}
	if r.eds == "" {
		return true
	}
	ets := v.types[endpointType]
	if ets == nil {
		return false
	}
	_, acked := ets.acked[r.eds]
	_, failed := ets.errors[r.eds]
	return acked || failed
}
