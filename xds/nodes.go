package xds

import (
	"maps"
	"slices"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// What connected nodes hold, as the tracker saw it: CSDS, readiness and
// the controller read it from here.

// NodeStatus is what one connected Envoy holds. ID is the Envoy's node id
// (its pod name), Cluster its node cluster (the gateway name).
type NodeStatus struct {
	ID      string
	Cluster string
	Delta   bool // the node uses incremental xDS
	Types   map[string]TypeStatus

	node *core.Node
}

// TypeStatus is one node's state for one resource type.
type TypeStatus struct {
	// Acked maps each resource the node has accepted to its version (see
	// Version).
	Acked map[string]string
	// Wildcard is true if the node asked for all resources of the type;
	// otherwise Subscribed lists the names it asked for.
	Wildcard   bool
	Subscribed []string
	// Errors holds, per resource, the last rejection of it that a later
	// ACK has not cleared.
	Errors map[string]ResourceError
	// LastNack is the last rejected response of this type, if any.
	LastNack *Nack
	// LastUpdated is when the node last ACKed or NACKed this type.
	LastUpdated time.Time
}

// Nack is one response an Envoy rejected.
type Nack struct {
	Error     string    // Envoy's error_detail message
	Version   string    // SotW: the version_info Envoy keeps running
	Resources []string  // the new or changed resources the response carried
	Time      time.Time // when the NACK arrived
}

// ResourceError is a rejection of one resource at one version.
type ResourceError struct {
	Version string
	Error   string
	Time    time.Time
}

// nodeView merges the streams of one node (one ADS stream, or one stream
// per type without ADS).
type nodeView struct {
	node  *core.Node
	delta bool
	types map[string]*typeState
}

// nodeEntry is what the tracker knows of one node across its streams.
type nodeEntry struct {
	streams []*streamState
	movedAt uint64         // the epoch of its last move: what it holds or asks for may have changed
	passed  [chains]uint64 // the newest barrier passed per chain (barrier.go)
	synced  syncedMemo     // holds.go
}

// view merges the entry's streams; with one stream (ADS) it copies nothing,
// so the view must not be changed.
func (e *nodeEntry) view() nodeView {
	st := e.streams[0]
	v := nodeView{node: st.node, delta: st.delta, types: st.types}
	if len(e.streams) == 1 {
		return v
	}
	v.types = map[string]*typeState{}
	for _, st := range e.streams {
		v.delta = v.delta || st.delta
		maps.Copy(v.types, st.types)
	}
	return v
}

// viewsLocked are the connected nodes' views by id; for CSDS, which
// copies them anyway. The paths run on every Envoy event iterate t.nodes
// and copy nothing.
func (t *tracker) viewsLocked() map[string]nodeView {
	out := make(map[string]nodeView, len(t.nodes))
	for id, e := range t.nodes {
		out[id] = e.view()
	}
	return out
}

func (t *tracker) snapshot() []NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	views := t.viewsLocked()
	out := make([]NodeStatus, 0, len(views))
	for _, v := range views {
		ns := NodeStatus{ID: v.node.GetId(), Cluster: v.node.GetCluster(), Delta: v.delta, Types: map[string]TypeStatus{}, node: v.node}
		for typeURL, ts := range v.types {
			s := TypeStatus{
				Acked:       ts.ackedAll(),
				Wildcard:    ts.wildcard,
				Subscribed:  slices.Sorted(maps.Keys(ts.subscribed)),
				Errors:      maps.Clone(ts.errors),
				LastUpdated: ts.lastUpdated,
			}
			if ts.lastNack != nil {
				n := *ts.lastNack
				s.LastNack = &n
			}
			ns.Types[typeURL] = s
		}
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

func (t *tracker) nodeIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Keys(t.nodes))
}

// Rejection is a standing rejection by one node (of this replica or a
// peer's) of one resource at one version, with Envoy's error.
type Rejection struct {
	Node, TypeURL, Name, Version, Error string
}

// rejections walks only the error maps: the controller asks on every
// Envoy event, so it must not copy what the nodes hold.
func (t *tracker) rejections() []Rejection {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Rejection
	for id, n := range t.nodes {
		for typeURL, ts := range n.view().types {
			for name, e := range ts.errors {
				out = append(out, Rejection{Node: id, TypeURL: typeURL, Name: name, Version: e.Version, Error: e.Error})
			}
		}
	}
	return out
}

func (t *tracker) acked(typeURL, name, version string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id, e := range t.nodes {
		if ts := e.view().types[typeURL]; ts != nil {
			if v, _ := ts.ackedOf(name); v == version {
				out = append(out, id)
			}
		}
	}
	slices.Sort(out)
	return out
}
