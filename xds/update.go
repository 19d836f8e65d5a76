package xds

import (
	"errors"
	"maps"
	"slices"
	"sort"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// SetSnapshot hands the server the full state to serve. The first call
// loads it and starts serving; later calls are diffed by content against
// what is served and applied in make-before-break order by the update loop,
// so SetSnapshot never blocks on Envoys. An error means the snapshot was
// malformed (wrong message type, key not the resource's name) and nothing
// was changed.
func (s *Server) SetSnapshot(snap Snapshot) error {
	byType := snap.byType()
	s.mu.Lock()
	prev := []state{s.served, s.desired}
	s.mu.Unlock()
	next := state{}
	var errs []error
	for _, t := range allTypes {
		e, err := buildEntries(t, byType[t], prev[0][t], prev[1][t])
		errs = append(errs, err)
		next[t] = e
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.desired = next
	s.gen++
	s.desiredGen = s.gen
	if !s.ready {
		s.openLocked()
		return nil
	}
	s.kickLoop()
	return nil
}

// SetEndpoints upserts the given assignments (keyed by cluster name) and
// touches nothing else: changed ones go out at once, on EDS only. To remove
// assignments, leave them out of the next SetSnapshot, which removes them
// after the clusters using them.
func (s *Server) SetEndpoints(eps map[string]*endpointv3.ClusterLoadAssignment) error {
	in := make(map[string]proto.Message, len(eps))
	for k, v := range eps {
		in[k] = v
	}
	s.mu.Lock()
	prev := []map[string]entry{s.served[endpointType], s.desired[endpointType]}
	s.mu.Unlock()
	changed, err := buildEntries(endpointType, in, prev...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := maps.Clone(s.desired)
	d[endpointType] = maps.Clone(d[endpointType])
	maps.Copy(d[endpointType], changed)
	s.desired = d
	if s.ready {
		s.syncLocked(endpointType, changed, true, false)
	}
	return nil
}

func (s *Server) kickLoop() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// syncLocked moves one type of the served state towards want: upserting
// resources whose version differs, and deleting those not in want if
// deletes is set. Only changed resources reach the cache, so only their
// subscribers hear about them. It returns the refs that changed, a
// removed one with an empty version.
func (s *Server) syncLocked(typeURL string, want map[string]entry, upserts, deletes bool) []ref {
	served := s.served[typeURL]
	var update map[string]types.Resource
	var remove []string
	var changed []ref
	if upserts {
		for name, e := range want {
			if old, ok := served[name]; ok && old.version == e.version {
				continue
			}
			if update == nil {
				update = map[string]types.Resource{}
			}
			update[name] = e.msg
			changed = append(changed, ref{typeURL: typeURL, name: name, version: e.version})
		}
	}
	if deletes {
		for name := range served {
			if _, ok := want[name]; !ok {
				remove = append(remove, name)
			}
		}
	}
	if len(update) == 0 && len(remove) == 0 {
		return nil
	}
	next := maps.Clone(served)
	for _, r := range changed {
		next[r.name] = want[r.name]
	}
	for _, name := range remove {
		delete(next, name)
	}
	s.served = maps.Clone(s.served)
	s.served[typeURL] = next
	sort.Strings(remove)
	for _, name := range remove {
		changed = append(changed, ref{typeURL: typeURL, name: name})
	}
	if err := s.caches[typeURL].UpdateResources(update, remove); err != nil {
		s.log.Error("xds: updating cache", zap.String("type", typeLabel(typeURL)), zap.Error(err))
	}
	size := 0
	for _, e := range next {
		size += e.size
	}
	s.m.resources.WithLabelValues(typeLabel(typeURL)).Set(float64(len(next)))
	s.m.bytes.WithLabelValues(typeLabel(typeURL)).Set(float64(size))
	s.log.Debug("xds: updated", zap.String("type", typeLabel(typeURL)),
		zap.Int("changed", len(changed)), zap.Int("removed", len(remove)))
	return changed
}

// run is the update loop. Each round takes the latest desired state d and
//
//  1. upserts clusters, endpoints and secrets, then waits until every
//     connected Envoy has ACKed (or rejected) the changed clusters and holds
//     endpoints for them, so routes never point at unknown clusters;
//  2. applies listeners, and upserts routes;
//  3. if anything is to be removed (clusters, endpoints, secrets, routes no
//     longer in d), waits until every Envoy holds d's listeners and routes,
//     then removes what neither d nor any newer state wants.
//
// Waits are bounded by Options.AckTimeout, so a stuck Envoy delays updates
// but cannot stop them.
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

func (s *Server) round() {
	s.mu.Lock()
	if !s.ready {
		s.mu.Unlock()
		return
	}
	d, dGen := s.desired, s.desiredGen
	var warm []ref
	warm = append(warm, s.syncLocked(clusterType, d[clusterType], true, false)...)
	s.syncLocked(endpointType, s.desired[endpointType], true, false)
	warm = append(warm, s.syncLocked(secretType, d[secretType], true, false)...)
	s.mu.Unlock()

	eds := edsNames(d[clusterType])
	for i := range warm {
		if warm[i].typeURL == clusterType {
			warm[i].eds = eds[warm[i].name]
		}
	}
	if !s.tracker.waitSettled(s.ctx, warm, s.opts.AckTimeout) && s.ctx.Err() == nil {
		s.log.Warn("xds: Envoys did not ACK new clusters in time; sending routes anyway", zap.Int("resources", len(warm)))
	}
	if s.ctx.Err() != nil {
		return
	}

	s.mu.Lock()
	// What this round changed in routing (scopes and listeners removed
	// count too) is what Envoys must hold before anything it leaves
	// unused goes.
	var hold []ref
	hold = append(hold, s.syncLocked(routeType, d[routeType], true, false)...)
	hold = append(hold, s.syncLocked(scopeType, d[scopeType], true, true)...)
	hold = append(hold, s.syncLocked(listenerType, d[listenerType], true, true)...)
	s.setAppliedLocked(dGen, listenerRefs(d))
	stale := false
	for _, t := range []string{clusterType, endpointType, secretType, routeType} {
		for name := range s.served[t] {
			if _, ok := d[t][name]; !ok {
				stale = true
			}
		}
	}
	s.mu.Unlock()
	if !stale {
		return
	}

	// Envoys must hold this round's listeners, scopes and routes before
	// anything goes.
	if !s.tracker.waitSettled(s.ctx, hold, s.opts.AckTimeout) && s.ctx.Err() == nil {
		s.log.Warn("xds: Envoys did not ACK new routes in time; removing unused resources anyway")
	}
	if s.ctx.Err() != nil {
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	latest := s.desired
	for _, t := range []string{routeType, secretType, clusterType, endpointType} {
		// Keep what d or a newer state still wants; the next round handles
		// the newer state's own removals.
		keep := maps.Clone(s.served[t])
		for name := range keep {
			_, inD := d[t][name]
			_, inLatest := latest[t][name]
			if !inD && !inLatest {
				delete(keep, name)
			}
		}
		s.syncLocked(t, keep, false, true)
	}
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

// setAppliedLocked records that generation gen's listeners (refs) are
// served. A few recent rounds are kept, so that an Envoy holding
// any of them counts as synced even while newer rounds go out.
func (s *Server) setAppliedLocked(gen uint64, refs []ref) {
	if n := len(s.applied); n > 0 && s.applied[n-1].gen == gen {
		return
	}
	s.applied = append(s.applied, appliedRound{gen: gen, refs: refs})
	if len(s.applied) > keepRounds {
		s.applied = slices.Clone(s.applied[len(s.applied)-keepRounds:])
	}
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
	var rounds [][]ref
	for _, r := range s.applied {
		if r.gen >= gen {
			rounds = append(rounds, r.refs)
		}
	}
	peers := s.peers
	s.mu.Unlock()
	var others map[string]*nodeView
	if peers != nil {
		others = peers.views()
	}
	return s.tracker.synced(rounds, others)
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
	var others map[string]*nodeView
	s.mu.Lock()
	peers := s.peers
	s.mu.Unlock()
	if peers != nil {
		others = peers.views()
	}
	_, behind := s.tracker.synced([][]ref{rs}, others)
	return behind
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
