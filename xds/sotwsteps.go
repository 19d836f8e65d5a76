package xds

import (
	"slices"
	"time"

	"go.uber.org/zap"
)

// sotwStep is a change the SotW watches get once every SotW Envoy has
// passed its barrier.
type sotwStep struct {
	typeURL string
	set     map[string]entry
	remove  []string
	b       *barrier
}

// sotwLoop hands the SotW caches the changes held behind barriers, in
// order, each once every SotW Envoy has passed its barrier (or it aged
// out): the fleet-wide make-before-break, among SotW Envoys only.
func (s *Server) sotwLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.sotwKick:
		}
		for {
			s.mu.Lock()
			if len(s.sotwSteps) == 0 {
				s.mu.Unlock()
				break
			}
			st := s.sotwSteps[0]
			s.sotwSteps = s.sotwSteps[1:]
			s.mu.Unlock()
			s.waitSotW(st.b)
			if s.ctx.Err() != nil {
				return
			}
			remove := st.remove
			if len(remove) > 0 {
				// A newer change may want it again.
				s.mu.Lock()
				remove = slices.DeleteFunc(slices.Clone(remove), func(n string) bool { _, wanted := s.desired[st.typeURL][n]; return wanted })
				s.mu.Unlock()
			}
			if err := s.caches[st.typeURL].updateSotW(st.set, remove); err != nil {
				s.log.Error("xds: updating SotW cache", zap.String("type", typeLabel(st.typeURL)), zap.Error(err))
			}
		}
	}
}

// waitSotW blocks until every SotW node has passed b, b ages out, or the
// server stops.
func (s *Server) waitSotW(b *barrier) {
	ch, cancel := s.tracker.subscribe()
	defer cancel()
	tick := time.NewTicker(s.opts.AckTimeout / 20)
	defer tick.Stop()
	for {
		all := true
		for _, id := range s.tracker.sotwNodes() {
			if !s.passes(id, b) {
				all = false
				break
			}
		}
		if all {
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
	}
}

// sotwNodes lists the nodes with a SotW stream.
func (t *tracker) sotwNodes() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for key, st := range t.streams {
		if !key.delta && st.node != nil {
			out = append(out, st.node.GetId())
		}
	}
	return out
}
