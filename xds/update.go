package xds

import (
	"errors"
	"sort"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// The desired and served states are kept by name and changed in place
// (under mu), and every change marks its names dirty: an update loop
// round applies the dirty names only, so a change costs its own size
// whatever the number of resources served.

// SetSnapshot hands the server the full state to serve. The first call
// loads it and starts serving; later calls are diffed against the desired
// state (which walks every resource: Update does not) and applied in
// make-before-break order by the update loop, so SetSnapshot never blocks
// on Envoys. An error means the snapshot was malformed (wrong message
// type, key not the resource's name) and nothing was changed.
func (s *Server) SetSnapshot(snap Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := s.entriesLocked(snap)
	if err != nil {
		return err
	}
	for _, t := range allTypes {
		var gone []string
		for name := range s.desired[t] {
			if _, ok := next[t][name]; !ok {
				gone = append(gone, name)
			}
		}
		s.setDesiredLocked(t, next[t], gone)
	}
	s.nextGenLocked()
	return nil
}

// Update changes the state to serve by what changed: set adds or replaces
// resources, remove (by type URL) names resources that go. It costs the
// size of the change. Errors are as for SetSnapshot.
func (s *Server) Update(set Snapshot, remove map[string][]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := s.entriesLocked(set)
	if err != nil {
		return err
	}
	for _, t := range allTypes {
		s.setDesiredLocked(t, next[t], remove[t])
	}
	s.nextGenLocked()
	return nil
}

// entriesLocked checks and versions the resources of snap, reusing the
// versions of messages already known.
func (s *Server) entriesLocked(snap Snapshot) (map[string]map[string]entry, error) {
	byType := snap.byType()
	next := map[string]map[string]entry{}
	var errs []error
	for _, t := range allTypes {
		e, err := buildEntries(t, byType[t], s.served[t], s.desired[t])
		errs = append(errs, err)
		next[t] = e
	}
	return next, errors.Join(errs...)
}

// setDesiredLocked records a change of one type and marks its names dirty.
func (s *Server) setDesiredLocked(typeURL string, set map[string]entry, remove []string) {
	d := s.desired[typeURL]
	for name, e := range set {
		old, ok := d[name]
		d[name] = e // the latest message, even if equal: VersionOf knows it
		if !ok || old.version != e.version {
			s.dirty[typeURL][name] = struct{}{}
		}
	}
	for _, name := range remove {
		if _, ok := d[name]; ok {
			delete(d, name)
			s.dirty[typeURL][name] = struct{}{}
		}
	}
}

func (s *Server) nextGenLocked() {
	s.gen++
	s.desiredGen = s.gen
	if !s.ready {
		s.openLocked()
		return
	}
	s.kickLoop()
}

// SetEndpoints upserts the given assignments (keyed by cluster name) and
// touches nothing else: changed ones go out at once, on EDS only. To remove
// assignments, remove them with Update (or leave them out of a snapshot),
// which removes them after the clusters using them.
func (s *Server) SetEndpoints(eps map[string]*endpointv3.ClusterLoadAssignment) error {
	in := make(map[string]proto.Message, len(eps))
	for k, v := range eps {
		in[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, err := buildEntries(endpointType, in, s.served[endpointType], s.desired[endpointType])
	if err != nil {
		return err
	}
	for name, e := range changed {
		s.desired[endpointType][name] = e
	}
	if s.ready {
		s.applyLocked(endpointType, changed, nil)
	}
	return nil
}

func (s *Server) kickLoop() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// applyLocked brings served resources of one type to set (those whose
// version differs) and removes the names in remove. Only changed resources
// reach the cache, so only their subscribers hear about them. It returns
// the refs that changed, a removed one with an empty version.
func (s *Server) applyLocked(typeURL string, set map[string]entry, remove []string) []ref {
	return s.applyAfterLocked(typeURL, set, remove, nil)
}

// applyAfterLocked is applyLocked with the change held back, per Envoy,
// behind barrier b (barrier.go); nil holds nothing back.
func (s *Server) applyAfterLocked(typeURL string, set map[string]entry, remove []string, b *barrier) []ref {
	served := s.served[typeURL]
	var update map[string]entry
	var changed []ref
	for name, e := range set {
		if old, ok := served[name]; ok && old.version == e.version {
			continue
		}
		if update == nil {
			update = map[string]entry{}
		}
		update[name] = e
		changed = append(changed, ref{typeURL: typeURL, name: name, version: e.version})
	}
	var gone []string
	for _, name := range remove {
		if _, ok := served[name]; ok {
			gone = append(gone, name)
		}
	}
	if len(update) == 0 && len(gone) == 0 {
		return nil
	}
	versions := make(map[string]string, len(update)+len(gone))
	for name, e := range update {
		s.size[typeURL] += e.size - served[name].size
		served[name] = e
		versions[name] = e.version
	}
	sort.Strings(gone)
	for _, name := range gone {
		s.size[typeURL] -= served[name].size
		delete(served, name)
		versions[name] = ""
		changed = append(changed, ref{typeURL: typeURL, name: name})
	}
	s.tracker.serve(typeURL, versions)
	if err := s.caches[typeURL].update(update, gone, b); err != nil {
		s.log.Error("xds: updating cache", zap.String("type", typeLabel(typeURL)), zap.Error(err))
	}
	if b != nil && s.caches[typeURL].sotwOn() {
		s.sotwSteps = append(s.sotwSteps, sotwStep{typeURL: typeURL, set: update, remove: gone, b: b})
	}
	s.m.resources.WithLabelValues(typeLabel(typeURL)).Set(float64(len(served)))
	s.m.bytes.WithLabelValues(typeLabel(typeURL)).Set(float64(s.size[typeURL]))
	s.log.Debug("xds: updated", zap.String("type", typeLabel(typeURL)),
		zap.Int("changed", len(update)), zap.Int("removed", len(gone)))
	return changed
}

// run is the update loop. Each round takes the names changed since the
// last one, with their desired resources at that moment, and hands the
// caches, at once and in this order:
//
//  1. clusters, endpoints and secrets;
//  2. route configurations, scopes and listeners (removals too), behind a
//     barrier: an Envoy gets them once it holds the clusters of step 1 and
//     their endpoints;
//  3. the route configurations, clusters, endpoints and secrets no longer
//     wanted, behind a second barrier: an Envoy lets them go once it holds
//     what step 2 changed.
//
// The barriers hold back each delta stream on its own (barrier.go), so no
// Envoy waits for another. SotW Envoys, which the caches cannot hold back
// one by one, get steps 2 and 3 from sotwLoop once every SotW Envoy holds
// what the barrier asks for (bounded by Options.AckTimeout).
func (s *Server) run() {
	defer close(s.done)
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		}
		s.round()
	}
}

// work is one round's change of one type: what to set, what to remove.
type work struct {
	set    map[string]entry
	remove []string
}

func (s *Server) round() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		return
	}
	gen := s.desiredGen
	w := map[string]work{}
	for t, names := range s.dirty {
		wt := work{set: map[string]entry{}}
		for name := range names {
			if e, ok := s.desired[t][name]; ok {
				wt.set[name] = e
			} else {
				wt.remove = append(wt.remove, name)
			}
		}
		w[t] = wt
		s.dirty[t] = map[string]struct{}{}
	}
	var warm []ref
	warm = append(warm, s.applyLocked(clusterType, w[clusterType].set, nil)...)
	s.applyLocked(endpointType, w[endpointType].set, nil)
	warm = append(warm, s.applyLocked(secretType, w[secretType].set, nil)...)
	for i := range warm {
		if warm[i].typeURL == clusterType {
			warm[i].eds = edsName(warm[i].name, w[clusterType].set[warm[i].name])
		}
	}
	now := s.now()
	// Routing waits for this round's clusters and every earlier round's:
	// a scope of this round must not overtake a route configuration an
	// earlier barrier still holds back in another cache.
	if len(warm) > 0 {
		s.barriers++
		s.warmed = &barrier{refs: warm, deadline: now.Add(s.opts.AckTimeout), after: s.warmed, chain: warmedChain, seq: s.barriers}
		s.tracker.forgetPassed(s.warmed, now)
	}
	first := s.warmed
	// What this round changed in routing (scopes and listeners removed
	// count too) is what an Envoy must hold before anything it leaves
	// unused goes.
	var hold []ref
	hold = append(hold, s.applyAfterLocked(routeType, w[routeType].set, nil, first)...)
	hold = append(hold, s.applyAfterLocked(scopeType, w[scopeType].set, w[scopeType].remove, first)...)
	hold = append(hold, s.applyAfterLocked(listenerType, w[listenerType].set, w[listenerType].remove, first)...)
	s.setAppliedLocked(gen, listenerRefs(s.desired))
	if len(hold) > 0 {
		// Its Envoy may get those only at the first barrier's deadline:
		// each wait gets its own AckTimeout, as when they came one
		// after the other.
		s.barriers++
		s.held = &barrier{refs: hold, deadline: now.Add(2 * s.opts.AckTimeout), after: s.held, chain: heldChain, seq: s.barriers}
		s.tracker.forgetPassed(s.held, now)
	}
	// Removals wait for every round's routing so far: what this one left
	// unused may have been left unused by an earlier one.
	for _, t := range []string{routeType, secretType, clusterType, endpointType} {
		s.applyAfterLocked(t, nil, w[t].remove, s.held)
	}
	if len(s.sotwSteps) > 0 {
		select {
		case s.sotwKick <- struct{}{}:
		default:
		}
	}
}
