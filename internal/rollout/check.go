package rollout

import (
	"time"

	"sluice.dev/sluice/translator"
)

// State is where one ingress's rollout stands.
type State int

const (
	// Pending: not published yet, or some Envoy does not serve it yet.
	Pending State = iota
	// Ready: every connected Envoy serves the published translation.
	Ready
	// Failed: it cannot be served (the table's error, or an Envoy's
	// rejection); the Envoys keep serving everything else.
	Failed
)

func (s State) String() string { return [...]string{"Pending", "Ready", "Failed"}[s] }

// Verdict is the answer to "why is this KIngress (not) Ready?".
type Verdict struct {
	State State
	// Behind lists the Envoys not serving it yet (Pending), and Gen and
	// Since the generation they lack and when it was published.
	Behind []string
	Gen    uint64
	Since  time.Time
	// Err is why it failed (Failed).
	Err *translator.Error
	// Took is the propagation time, on the first check that finds it
	// Ready after a change; 0 otherwise.
	Took time.Duration
}

// Check decides the state of the ingress whose table entry is p, with the
// table's error e for it, asking the fleet whether it is served. A
// failure is reported once the state without the ingress is published.
func (b *Book) Check(p *translator.Piece, e *translator.Error, now time.Time) Verdict {
	key := p.Key()
	b.mu.Lock()
	var gen uint64
	var since time.Time
	if r, ok := b.ingresses[key]; ok {
		gen, since = r.publishedGen, r.publishedAt
	}
	if e != nil && gen != 0 {
		b.waiting.Delete(key)
	}
	b.mu.Unlock()
	switch {
	case gen == 0:
		// Not published yet, whatever the outcome: status follows what
		// is served.
		return Verdict{State: Pending}
	case e != nil:
		return Verdict{State: Failed, Err: e}
	}
	behind := b.fleet.Behind(gen, p)
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.ingresses[key]
	if !ok || r.publishedGen != gen {
		// Republished (or gone) meanwhile: the next check decides.
		return Verdict{State: Pending}
	}
	if len(behind) > 0 {
		b.waiting.Insert(key)
		return Verdict{State: Pending, Behind: behind, Gen: gen, Since: since}
	}
	b.waiting.Delete(key)
	v := Verdict{State: Ready}
	if r.confirmedGen != r.publishedGen {
		r.confirmedGen = r.publishedGen
		if !r.madeAt.IsZero() {
			v.Took = now.Sub(r.madeAt)
			r.madeAt = time.Time{}
		}
	}
	return v
}
