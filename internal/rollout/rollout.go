// Package rollout is the way back from the Envoys to KIngress status: for
// every ingress, which published state holds its translation, whether
// every Envoy (of every replica) serves it, and whether one rejected it.
// "Why is this KIngress not Ready?" is answered by Book.Check; "which
// ingress did this NACK come from?" by Book.Culprits.
//
// The controller feeds it (a translation changed, a state was published,
// an ingress is gone) and writes the status it decides; the xds server
// answers what the Envoys hold through Fleet.
package rollout

import (
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"

	"sluice.dev/sluice/translator"
)

// Rejection is an Envoy's standing NACK of one resource at one version.
type Rejection struct {
	Node, TypeURL, Name, Version, Error string
}

// Fleet is what the connected Envoys hold, this replica's and its peers'.
type Fleet interface {
	// Behind lists the Envoys that do not yet serve p as the state of
	// generation gen has it.
	Behind(gen uint64, p *translator.Piece) []string
	// Rejections lists the standing NACKs.
	Rejections() []Rejection
	// Served is the version of a resource now served ("" for none).
	Served(typeURL, name string) string
}

// Table is what the translator's table says about ingresses
// (*translator.Table is one).
type Table interface {
	Keys() []string
	Get(key string) (*translator.Piece, bool)
	Status(key string) *translator.Error
}

// Book keeps the rollout of every ingress in the table. It is safe for
// concurrent use; it never calls back into its caller, and asks the Fleet
// without holding its lock.
type Book struct {
	fleet Fleet

	mu        sync.Mutex
	ingresses map[string]*ingress
	// keys of the ingresses some Envoy does not serve yet, so an Envoy
	// event re-checks those only
	waiting sets.Set[string]
	// per rejected resource (type URL, name), the version already acted on
	handled map[[2]string]string
}

// ingress is the rollout of one ingress.
type ingress struct {
	// outcome identifies the table's outcome last noted (generation,
	// digest, error), so only changes are written.
	outcome string
	// publishedGen is the generation of the published state that first
	// held the current outcome (0: not published yet; a Sink's
	// generations start at 1).
	publishedGen uint64
	// publishedAt is when publishedGen was published.
	publishedAt time.Time
	// confirmedGen is the publishedGen every Envoy was last seen serving.
	confirmedGen uint64
	// madeAt is when the current translation was made, until confirmed:
	// the start of the propagation time.
	madeAt time.Time
	// quarantine, if set, is a translation an Envoy rejected: that exact
	// translation stays out until the ingress or what it references
	// changes.
	quarantine *quarantined
}

type quarantined struct {
	digest string
	err    *translator.Error
}

// NewBook starts an empty book reading the Envoys' state from fleet.
func NewBook(fleet Fleet) *Book {
	return &Book{fleet: fleet, ingresses: map[string]*ingress{}, waiting: sets.New[string](), handled: map[[2]string]string{}}
}

func (b *Book) getLocked(key string) *ingress {
	r, ok := b.ingresses[key]
	if !ok {
		r = &ingress{}
		b.ingresses[key] = r
	}
	return r
}

// Quarantined returns the rejection to serve instead of the translation
// with this digest if an Envoy rejected that same translation; a
// different translation lifts the quarantine.
func (b *Book) Quarantined(key, digest string) *translator.Error {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.ingresses[key]
	if !ok || r.quarantine == nil {
		return nil
	}
	if r.quarantine.digest == digest {
		return r.quarantine.err
	}
	r.quarantine = nil
	return nil
}

// Changed records that the table took a new translation of key at t.
func (b *Book) Changed(key string, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.getLocked(key).madeAt = t
}

// Noted records the table's outcome for p (its error, if any) and reports
// whether it differs from the last one noted: only then is a status write
// needed.
func (b *Book) Noted(p *translator.Piece, e *translator.Error) bool {
	s := fmt.Sprintf("%d/%s", p.Generation, p.Digest)
	if e != nil {
		s += "/" + e.Reason + "/" + e.Message
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.getLocked(p.Key())
	if r.outcome == s {
		return false
	}
	r.outcome = s
	return true
}

// Published records that the state of generation gen, published at t,
// first holds the current outcome of keys.
func (b *Book) Published(keys []string, gen uint64, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		r := b.getLocked(k)
		r.publishedGen, r.publishedAt = gen, t
	}
}

// Forget drops everything kept for key: the ingress is gone.
func (b *Book) Forget(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.ingresses, key)
	b.waiting.Delete(key)
}

// Waiting lists the ingresses some Envoy did not serve when last checked.
func (b *Book) Waiting() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting.UnsortedList()
}

// Describe says where key's rollout stands, for logs.
func (b *Book) Describe(key string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.ingresses[key]
	if !ok {
		return "unknown"
	}
	return r.String()
}

func (r *ingress) String() string {
	return fmt.Sprintf("published in generation %d, confirmed %d", r.publishedGen, r.confirmedGen)
}
