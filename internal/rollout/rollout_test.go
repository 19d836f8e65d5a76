package rollout

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/apis"

	"sluice.dev/sluice/translator"
)

// fleet is what the Envoys hold, as the test says.
type fleet struct {
	behind     []string
	rejections []Rejection
	served     map[string]string // "type/name" -> version
}

func (f *fleet) Behind(uint64, *translator.Piece) []string { return f.behind }
func (f *fleet) Rejections() []Rejection                   { return f.rejections }
func (f *fleet) Served(typeURL, name string) string        { return f.served[typeURL+"/"+name] }

// table holds pieces as the controller's table would.
type table struct {
	pieces map[string]*translator.Piece
	errs   map[string]*translator.Error
}

func (t *table) Keys() []string {
	var out []string
	for k := range t.pieces {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
func (t *table) Get(key string) (*translator.Piece, bool) { p, ok := t.pieces[key]; return p, ok }

// Status is as translator.Table's: the piece's own error, else the
// table's (a conflict, say).
func (t *table) Status(key string) *translator.Error {
	if p, ok := t.pieces[key]; ok && p.Err != nil {
		return p.Err
	}
	return t.errs[key]
}

func piece(name, digest string, gen int64) *translator.Piece {
	return &translator.Piece{Namespace: "ns", Name: name, Generation: gen, Digest: digest,
		Routes: []*routev3.RouteConfiguration{{Name: translator.IngressRoutes("ns", name)}}}
}

// Every transition of one ingress's rollout, in the order a reader would
// tell it: each row is what happened (to the table, the book or the
// Envoys) and what Check says afterwards.
func TestTransitions(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	f := &fleet{served: map[string]string{}}
	tb := &table{pieces: map[string]*translator.Piece{}, errs: map[string]*translator.Error{}}
	b := NewBook(f)
	routes := translator.IngressRoutes("ns", "a")
	var gen uint64
	// As the controller does: translate (a quarantined translation is
	// replaced by its rejection), set, note, publish.
	translate := func(digest string, ingGen int64, ms int) {
		p := piece("a", digest, ingGen)
		if e := b.Quarantined("ns/a", p.Digest); e != nil {
			p = RejectedPiece(p, e)
		} else {
			b.Changed("ns/a", at(ms))
		}
		tb.pieces["ns/a"] = p
	}
	publish := func() {
		gen++
		if b.Noted(tb.pieces["ns/a"], tb.Status("ns/a")) {
			b.Published([]string{"ns/a"}, gen, time.Time{})
		}
		f.served[resource.RouteType+"/"+routes] = fmt.Sprint("v", gen)
	}
	var culprits []Culprit

	steps := []struct {
		what string
		do   func()
		now  int // ms, when checked
		// what Check says then
		state   State
		behind  []string
		reason  string
		took    time.Duration
		waiting bool
	}{
		{what: "translated, not yet published: pending", do: func() { translate("d1", 1, 0) }, state: Pending},
		{what: "published; no Envoy has ACKed yet", do: func() { publish(); f.behind = []string{"e0", "e1"} },
			now: 10, state: Pending, behind: []string{"e0", "e1"}, waiting: true},
		{what: "e0 ACKs", do: func() { f.behind = []string{"e1"} }, now: 20, state: Pending, behind: []string{"e1"}, waiting: true},
		{what: "e1 ACKs: Ready, 30 ms after the change", do: func() { f.behind = nil }, now: 30, state: Ready, took: 30 * time.Millisecond},
		{what: "checked again: Ready, propagation observed once", now: 40, state: Ready},
		{what: "an Envoy joins and has not ACKed yet", do: func() { f.behind = []string{"e2"} }, now: 50, state: Pending, behind: []string{"e2"}, waiting: true},
		{what: "it leaves again", do: func() { f.behind = nil }, now: 60, state: Ready},
		{what: "a peer replica cannot be asked: its Envoys are not counted (the fleet leaves them out)", do: func() { f.behind = nil }, now: 70, state: Ready},
		{what: "spec change (generation 2)", do: func() { translate("d2", 2, 100); publish(); f.behind = []string{"e0"} },
			now: 110, state: Pending, behind: []string{"e0"}, waiting: true},
		{what: "spec change during that rollout (generation 3)", do: func() { translate("d3", 3, 120); publish() },
			now: 130, state: Pending, behind: []string{"e0"}, waiting: true},
		{what: "e0 NACKs generation 3's route configuration: the leader finds the culprit, Failed at once",
			do: func() {
				f.rejections = []Rejection{{Node: "e0", TypeURL: resource.RouteType, Name: routes, Version: fmt.Sprint("v", gen), Error: "duplicate domain"}}
				culprits = b.Culprits(tb)
				if len(culprits) != 1 || culprits[0].Key != "ns/a" || culprits[0].Piece.Err == nil {
					t.Fatalf("culprits %+v", culprits)
				}
				tb.pieces["ns/a"] = culprits[0].Piece
			},
			now: 140, state: Failed, reason: ReasonEnvoyRejected},
		{what: "the same NACK seen again before the republish lands: acted on once",
			do: func() {
				if again := b.Culprits(tb); len(again) != 0 {
					t.Fatalf("culprits again: %+v", again)
				}
			},
			now: 145, state: Failed, reason: ReasonEnvoyRejected},
		{what: "republished without it: still Failed with Envoy's error", do: func() { publish(); f.rejections, f.behind = nil, nil },
			now: 150, state: Failed, reason: ReasonEnvoyRejected},
		{what: "the same translation again (a resync): still rejected", do: func() { translate("d3", 3, 200); publish() },
			now: 210, state: Failed, reason: ReasonEnvoyRejected},
		{what: "a fixed spec (generation 4): quarantine lifted", do: func() { translate("d4", 4, 300); publish(); f.behind = []string{"e0"} },
			now: 310, state: Pending, behind: []string{"e0"}, waiting: true},
		{what: "served: Ready, 20 ms after the fix", do: func() { f.behind = nil }, now: 320, state: Ready, took: 20 * time.Millisecond},
		{what: "a Service it needs is deleted: the table's error, Failed", do: func() {
			tb.errs["ns/a"] = &translator.Error{Reason: translator.ReasonServiceNotFound, Message: "gone"}
			publish()
		}, now: 400, state: Failed, reason: translator.ReasonServiceNotFound},
		{what: "a NACK of something an already-served ingress feeds blames nobody", do: func() {
			delete(tb.errs, "ns/a")
			translate("d5", 5, 500)
			publish()
			b.Check(tb.pieces["ns/a"], nil, at(505)) // confirmed served
			f.rejections = []Rejection{{Node: "e0", TypeURL: resource.RouteType, Name: routes, Version: fmt.Sprint("v", gen), Error: "x"}}
			if c := b.Culprits(tb); len(c) != 0 {
				t.Fatalf("a served ingress was blamed: %+v", c)
			}
			f.rejections = nil
		}, now: 510, state: Ready},
		{what: "the ingress is deleted: forgotten", do: func() { b.Forget("ns/a") }, now: 600, state: Pending},
	}
	for i, s := range steps {
		if s.do != nil {
			s.do()
		}
		v := b.Check(tb.pieces["ns/a"], tb.Status("ns/a"), at(s.now))
		reason := ""
		if v.Err != nil {
			reason = v.Err.Reason
		}
		waiting := slices.Contains(b.Waiting(), "ns/a")
		if v.State != s.state || !slices.Equal(v.Behind, s.behind) || reason != s.reason || v.Took != s.took || waiting != s.waiting {
			t.Fatalf("step %d, %s:\n got %v behind %v reason %q took %v waiting %v\nwant %v behind %v reason %q took %v waiting %v\n(%s)",
				i, s.what, v.State, v.Behind, reason, v.Took, waiting, s.state, s.behind, s.reason, s.took, s.waiting, b.Describe("ns/a"))
		}
	}
}

// A NACK of a shared resource (a cluster two ingresses use) blames only
// the ingress not yet confirmed; a NACK of an older version blames nobody.
func TestCulpritsShared(t *testing.T) {
	f := &fleet{served: map[string]string{resource.ClusterType + "/ns/svc:80": "c2"}}
	tb := &table{pieces: map[string]*translator.Piece{}, errs: map[string]*translator.Error{}}
	b := NewBook(f)
	for i, name := range []string{"old", "new"} {
		p := piece(name, "d", 1)
		p.Clusters = append(p.Clusters, clusterNamed("ns/svc:80"))
		tb.pieces[p.Key()] = p
		b.Noted(p, nil)
		b.Published([]string{p.Key()}, uint64(i+1), time.Time{})
	}
	b.Check(tb.pieces["ns/old"], nil, time.Now()) // confirmed
	f.rejections = []Rejection{{Node: "e0", TypeURL: resource.ClusterType, Name: "ns/svc:80", Version: "c1", Error: "older"}}
	if c := b.Culprits(tb); len(c) != 0 {
		t.Fatalf("an older version's NACK blamed %+v", c)
	}
	f.behind = []string{"e0"}
	f.rejections[0].Version = "c2"
	c := b.Culprits(tb)
	if len(c) != 1 || c[0].Key != "ns/new" || !strings.Contains(c[0].Piece.Err.Message, `cluster "ns/svc:80": older`) {
		t.Fatalf("culprits %+v", c)
	}
}

// The leader's word in status: replicas leave that generation out.
func TestStatusRejection(t *testing.T) {
	ing := &v1alpha1.Ingress{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	ing.Status.ObservedGeneration = 3
	ing.Status.SetConditions(apis.Conditions{{Type: v1alpha1.IngressConditionNetworkConfigured, Status: "False",
		Reason: ReasonEnvoyRejected, Message: "Envoy e0 rejected"}})
	if e := StatusRejection(ing); e == nil || e.Message != "Envoy e0 rejected" {
		t.Fatalf("got %v", e)
	}
	ing.Generation = 4 // a new generation is judged anew
	if e := StatusRejection(ing); e != nil {
		t.Fatalf("new generation still rejected: %v", e)
	}
}

func clusterNamed(name string) *clusterv3.Cluster { return &clusterv3.Cluster{Name: name} }

// A leader change: the new leader's book starts empty and learns from its
// own publish; a NACK the old leader acted on reaches it through status
// (StatusRejection), so the rejected piece is no suspect and nothing else
// is blamed for the same standing NACK.
func TestLeaderChange(t *testing.T) {
	routes := translator.IngressRoutes("ns", "a")
	f := &fleet{served: map[string]string{resource.RouteType + "/" + routes: "v7"},
		rejections: []Rejection{{Node: "e0", TypeURL: resource.RouteType, Name: routes, Version: "v7", Error: "duplicate domain"}}}
	tb := &table{pieces: map[string]*translator.Piece{}, errs: map[string]*translator.Error{}}
	ing := &v1alpha1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", Generation: 2}}
	ing.Status.ObservedGeneration = 2
	ing.Status.SetConditions(apis.Conditions{{Type: v1alpha1.IngressConditionNetworkConfigured, Status: "False",
		Reason: ReasonEnvoyRejected, Message: "Envoy e0 rejected route configuration: duplicate domain"}})

	b := NewBook(f) // the new leader's
	p := piece("a", "d2", 2)
	if e := StatusRejection(ing); e != nil {
		p = RejectedPiece(p, e)
	}
	tb.pieces[p.Key()] = p
	if v := b.Check(p, tb.Status(p.Key()), time.Now()); v.State != Pending {
		t.Fatalf("before its own publish: %v", v.State)
	}
	b.Noted(p, tb.Status(p.Key()))
	b.Published([]string{p.Key()}, 1, time.Time{})
	if c := b.Culprits(tb); len(c) != 0 {
		t.Fatalf("the new leader blamed %+v for a NACK already in status", c)
	}
	if v := b.Check(p, tb.Status(p.Key()), time.Now()); v.State != Failed || v.Err.Reason != ReasonEnvoyRejected {
		t.Fatalf("after its publish: %v %v", v.State, v.Err)
	}
}
