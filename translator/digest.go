package translator

import (
	"crypto/sha256"
	"encoding/hex"

	"google.golang.org/protobuf/proto"
)

// digest hashes everything a piece contributes, in a fixed order.
func digest(p *Piece) string {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	write := func(m proto.Message) {
		b, _ := opts.Marshal(m)
		h.Write(b)
		h.Write([]byte{0})
	}
	for _, group := range [][]proto.Message{asMessages(p.Routes), asMessages(p.Scopes),
		asMessages(p.Clusters), asMessages(p.Secrets)} {
		for _, m := range group {
			write(m)
		}
		h.Write([]byte{1})
	}
	for _, e := range p.TLS {
		for _, s := range append(e.Hosts, e.Secret) {
			h.Write([]byte(s + "\x00"))
		}
	}
	for _, ss := range [][]string{p.ExternalHosts, p.InternalHosts} {
		for _, s := range ss {
			h.Write([]byte(s + "\x00"))
		}
		h.Write([]byte{1})
	}
	if p.Err != nil {
		h.Write([]byte(p.Err.Reason + "\x00" + p.Err.Message))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
