package xds

import (
	"fmt"
	"strconv"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// What the tracker records of each response sent: the resources under its
// nonce, for the ACK or NACK that answers it, and for SotW the multiset
// hash that becomes the response's version_info.

// entryHash feeds a multiset hash (a sum), so a type's version can be kept
// up to date per changed resource instead of rehashing everything.
func entryHash(name, version string) uint64 {
	// FNV-1a, inline to avoid allocating a hash.Hash per entry.
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h = (h ^ uint64(name[i])) * prime
	}
	h *= prime // the separator, a zero byte
	for i := 0; i < len(version); i++ {
		h = (h ^ uint64(version[i])) * prime
	}
	return h
}

// onResponse records a SotW response about to be sent and sets its
// version_info to a hash of what the node holds once it applies it, so the
// same state has the same version on every server. go-control-plane would
// otherwise send its cache's update counter. The callback runs right before
// the message is sent, and the message is this stream's own.
func (t *tracker) onResponse(id int64, resp *discovery.DiscoveryResponse) {
	res := make(map[string]string, len(resp.GetResources()))
	for _, a := range resp.GetResources() {
		name, version := t.hashes.get(a.GetValue())
		res[name] = version
	}
	typeURL := resp.GetTypeUrl()
	t.m.pushes.WithLabelValues(typeLabel(typeURL)).Inc()

	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[streamKey{id: id}]
	if st == nil {
		return
	}
	ts, _ := t.typeStateLocked(st, typeURL)
	full := sotwFullState(typeURL)
	if full {
		clear(ts.sent)
		ts.sentSum = 0
	}
	for n, v := range res {
		if old, ok := ts.sent[n]; ok {
			ts.sentSum -= entryHash(n, old)
		}
		ts.sent[n] = v
		ts.sentSum += entryHash(n, v)
	}
	resp.VersionInfo = fmt.Sprintf("%016x", ts.sentSum)
	seq, _ := strconv.ParseInt(resp.GetNonce(), 10, 64)
	ts.pending[resp.GetNonce()] = &sentResponse{seq: seq, full: full, resources: res}
}

func (t *tracker) onDeltaResponse(id int64, resp *discovery.DeltaDiscoveryResponse) {
	typeURL := resp.GetTypeUrl()
	t.m.pushes.WithLabelValues(typeLabel(typeURL)).Inc()
	res := make(map[string]string, len(resp.GetResources()))
	for _, r := range resp.GetResources() {
		res[r.GetName()] = r.GetVersion()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[streamKey{delta: true, id: id}]
	if st == nil {
		return
	}
	ts, _ := t.typeStateLocked(st, typeURL)
	seq, _ := strconv.ParseInt(resp.GetNonce(), 10, 64)
	ts.pending[resp.GetNonce()] = &sentResponse{seq: seq, resources: res, removed: resp.GetRemovedResources()}
}
