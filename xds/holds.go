package xds

import (
	"context"
	"slices"
	"time"
)

// Whether connected nodes hold given resource versions: the server waits
// on it between rounds, and readiness asks it per ingress.

// ref is a resource version that connected nodes must hold before the
// server moves on. For a cluster, eds names the endpoints it needs too.
type ref struct {
	typeURL, name, version string
	eds                    string
}

// settled reports whether every connected node holds (or has rejected)
// every ref that concerns it. Nodes found settled are added to done and not
// checked again: a node only moves forward, and one that reconnects gets
// the current state from the caches anyway.
func (t *tracker) settled(refs []ref, done map[string]bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := true
	for id, v := range t.viewsLocked() {
		if done[id] {
			continue
		}
		if v.holdsAll(refs) {
			done[id] = true
		} else {
			all = false
		}
	}
	return all
}

func (v *nodeView) holdsAll(refs []ref) bool {
	for _, r := range refs {
		if !v.holds(r) {
			return false
		}
	}
	return true
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

// waitSettled blocks until settled(refs), the timeout, or ctx is done. It
// reports whether the nodes settled. Checks run at most every checkEvery,
// however fast ACKs come in.
func (t *tracker) waitSettled(ctx context.Context, refs []ref, timeout time.Duration) bool {
	if len(refs) == 0 {
		return true
	}
	ch, cancel := t.subscribe()
	defer cancel()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	done := map[string]bool{}
	for {
		if t.settled(refs, done) {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
		select {
		case <-time.After(checkEvery):
		case <-ctx.Done():
			return false
		}
	}
}

// A round's refs are what it changed, so a check is cheap: ACKs that come
// together are still looked at together.
const checkEvery = time.Millisecond
