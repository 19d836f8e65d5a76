package xds

import (
	"sync"
	"unsafe"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// resourceName reads field 1 of an encoded resource: the name of a Cluster,
// Listener, RouteConfiguration, ScopedRouteConfiguration and Secret, the
// cluster_name of a ClusterLoadAssignment. Deterministic encoding puts it
// first.
func resourceName(b []byte) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ""
			}
			return string(v)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		b = b[n:]
	}
	return ""
}

// hashMemo remembers the name and version of encoded resources. SotW
// responses carry no per-resource versions, so each one would otherwise be
// hashed once per Envoy; but LinearCache encodes a resource once and every
// stream's response shares those bytes, so their address identifies them.
// Keys keep the arrays alive, so an address is never reused while it is a
// key, and the bytes are never modified. The memo is emptied when it holds
// more than memoMax entries or memoBytes bytes, which bounds the garbage it
// can keep alive.
type hashMemo struct {
	mu    sync.Mutex
	m     map[*byte]memoEntry
	bytes int
}

type memoEntry struct {
	n             int
	name, version string
}

const (
	memoMax   = 1 << 16
	memoBytes = 64 << 20
)

func (h *hashMemo) get(b []byte) (name, version string) {
	if len(b) == 0 {
		return "", cache.HashResource(b)
	}
	p := unsafe.SliceData(b)
	h.mu.Lock()
	e, ok := h.m[p]
	h.mu.Unlock()
	if ok && e.n == len(b) {
		return e.name, e.version
	}
	e = memoEntry{n: len(b), name: resourceName(b), version: cache.HashResource(b)}
	h.mu.Lock()
	if h.m == nil || len(h.m) >= memoMax || h.bytes+len(b) > memoBytes {
		h.m, h.bytes = make(map[*byte]memoEntry), 0
	}
	h.m[p] = e
	h.bytes += len(b)
	h.mu.Unlock()
	return e.name, e.version
}
