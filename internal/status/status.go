// Package status answers "which Envoys have my config?" from the CSDS of
// Sluice's replicas: per Envoy and resource type what it ACKed and whether
// that is what is served now (SYNCED), an older version (STALE), or was
// rejected, with Envoy's error. `sluice status` prints it.
package status

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"sluice.dev/sluice/xds"
)

// States of a resource type or an ingress on one Envoy, worst last.
const (
	Synced   = "SYNCED"   // every resource ACKed at the version served now
	NotSent  = "NOT SENT" // asked for, nothing ACKed yet
	Stale    = "STALE"    // some ACKed at an older version
	Rejected = "REJECTED" // Envoy NACKed some
	Missing  = "MISSING"  // the Envoy does not have it
)

// Types are the resource types in the order columns show them, with the
// short names Envoy's xDS APIs go by.
var Types = []struct{ URL, Short string }{
	{resource.ListenerType, "LDS"},
	{resource.ScopedRouteType, "SRDS"},
	{resource.RouteType, "RDS"},
	{resource.ClusterType, "CDS"},
	{resource.EndpointType, "EDS"},
	{resource.SecretType, "SDS"},
}

// Fleet is what the replicas asked said.
type Fleet struct {
	Envoys []Envoy `json:"envoys"`
	// Replicas that could not be asked, with why.
	Unreachable []Unreachable `json:"unreachable,omitempty"`
	// Scope says what the answer covers (every replica's Envoys or one's).
	Scope []string `json:"scope,omitempty"`
}

// Unreachable is a replica that did not answer.
type Unreachable struct {
	Replica string `json:"replica"`
	Error   string `json:"error"`
}

// Envoy is one connected Envoy.
type Envoy struct {
	Node    string `json:"node"`
	Replica string `json:"replica"`
	// HeapPressure is the Envoy's heap over its bound as it last reported
	// (nil: no report); Refusing names the overload actions by which it
	// turns traffic away, which leave it out of readiness.
	HeapPressure *float64   `json:"heapPressure,omitempty"`
	Refusing     string     `json:"refusing,omitempty"`
	Types        []TypeSync `json:"types"`
	// resources by type URL and name, for ForIngress.
	resources map[string]map[string]Resource
}

// TypeSync is one resource type on one Envoy.
type TypeSync struct {
	Type      string     `json:"type"`
	State     string     `json:"state"`
	Resources int        `json:"resources"`
	Synced    int        `json:"synced"`
	Stale     int        `json:"stale,omitempty"`
	NotSent   int        `json:"notSent,omitempty"`
	Rejected  []Resource `json:"rejected,omitempty"`
}

// Resource is one resource on one Envoy.
type Resource struct {
	Name    string `json:"name"`
	Type    string `json:"type,omitempty"`
	State   string `json:"state"`
	Version string `json:"version,omitempty"` // the version the Envoy ACKed
	Error   string `json:"error,omitempty"`   // Envoy's words, when it NACKed
}

// FromCSDS reads CSDS answers (from one replica for the fleet, or from each
// replica for its own Envoys). An Envoy answered for twice is kept once.
func FromCSDS(answers ...*statusv3.ClientStatusResponse) Fleet {
	var f Fleet
	seen, down := map[string]bool{}, map[string]bool{}
	for _, a := range answers {
		for _, cc := range a.GetConfig() {
			meta := cc.GetNode().GetMetadata().GetFields()
			replica := meta[xds.ReplicaKey].GetStringValue()
			if e := meta[xds.ReplicaErrorKey].GetStringValue(); e != "" {
				if !down[replica] {
					f.Unreachable = append(f.Unreachable, Unreachable{Replica: replica, Error: e})
				}
				down[replica] = true
				continue
			}
			id := cc.GetNode().GetId()
			if seen[id] {
				continue
			}
			seen[id] = true
			e := envoy(id, replica, cc.GetGenericXdsConfigs())
			if v, err := strconv.ParseFloat(meta[xds.PressureKey].GetStringValue(), 64); err == nil {
				e.HeapPressure = &v
			}
			e.Refusing = meta[xds.RefusingKey].GetStringValue()
			f.Envoys = append(f.Envoys, e)
		}
	}
	slices.SortFunc(f.Envoys, func(a, b Envoy) int { return strings.Compare(a.Node, b.Node) })
	slices.SortFunc(f.Unreachable, func(a, b Unreachable) int { return strings.Compare(a.Replica, b.Replica) })
	return f
}

func envoy(id, replica string, gs []*statusv3.ClientConfig_GenericXdsConfig) Envoy {
	e := Envoy{Node: id, Replica: replica, resources: map[string]map[string]Resource{}}
	for _, g := range gs {
		r := Resource{Name: g.GetName(), State: resourceState(g), Version: g.GetVersionInfo()}
		if es := g.GetErrorState(); es != nil {
			r.Error = es.GetDetails()
		}
		if e.resources[g.GetTypeUrl()] == nil {
			e.resources[g.GetTypeUrl()] = map[string]Resource{}
		}
		e.resources[g.GetTypeUrl()][g.GetName()] = r
	}
	for _, t := range Types {
		ts := TypeSync{Type: t.Short}
		for _, name := range slices.Sorted(maps.Keys(e.resources[t.URL])) {
			r := e.resources[t.URL][name]
			ts.Resources++
			switch r.State {
			case Synced:
				ts.Synced++
			case Stale:
				ts.Stale++
			case NotSent:
				ts.NotSent++
			case Rejected:
				r.Type = t.Short
				ts.Rejected = append(ts.Rejected, r)
			}
		}
		ts.State = typeState(ts)
		e.Types = append(e.Types, ts)
	}
	return e
}

func resourceState(g *statusv3.ClientConfig_GenericXdsConfig) string {
	switch {
	case g.GetClientStatus() == adminv3.ClientResourceStatus_NACKED || g.GetConfigStatus() == statusv3.ConfigStatus_ERROR:
		return Rejected
	case g.GetConfigStatus() == statusv3.ConfigStatus_SYNCED:
		return Synced
	case g.GetClientStatus() == adminv3.ClientResourceStatus_ACKED:
		return Stale
	case g.GetClientStatus() == adminv3.ClientResourceStatus_DOES_NOT_EXIST:
		return Missing
	}
	return NotSent
}

func typeState(ts TypeSync) string {
	switch {
	case len(ts.Rejected) > 0:
		return Rejected
	case ts.Stale > 0:
		return Stale
	case ts.NotSent > 0:
		return NotSent
	case ts.Resources == 0:
		return "-"
	}
	return Synced
}

// worse is the worse of two states.
func worse(a, b string) string {
	rank := func(s string) int { return slices.Index([]string{Synced, NotSent, Stale, Rejected, Missing}, s) }
	if rank(b) > rank(a) {
		return b
	}
	return a
}
