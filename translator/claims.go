package translator

import "sort"

// Host claims: a host (per listener kind) belongs to one served ingress;
// the older of two claimants keeps it.

func scopedHosts(p *Piece) []string {
	out := make([]string, 0, len(p.ExternalHosts)+len(p.InternalHosts))
	for _, h := range p.ExternalHosts {
		out = append(out, "e:"+h)
	}
	for _, h := range p.InternalHosts {
		out = append(out, "i:"+h)
	}
	for _, e := range p.TLS {
		for _, h := range e.Hosts {
			out = append(out, "t:"+h)
		}
	}
	return out
}

func (t *Table) claim(p *Piece) {
	if p.Err != nil {
		return
	}
	for _, h := range scopedHosts(p) {
		t.claims[h] = append(t.claims[h], p.Key())
		if len(t.claims[h]) > 1 {
			t.contended[h] = true
		}
	}
}

func (t *Table) unclaim(p *Piece) {
	if p.Err != nil {
		return
	}
	key := p.Key()
	for _, h := range scopedHosts(p) {
		ks := t.claims[h]
		for i, k := range ks {
			if k == key {
				ks = append(ks[:i], ks[i+1:]...)
				break
			}
		}
		if len(ks) == 0 {
			delete(t.claims, h)
		} else {
			t.claims[h] = ks
		}
		if len(ks) < 2 {
			delete(t.contended, h)
		}
	}
}

// settle decides which contended pieces are served: in age order, a piece
// is accepted unless a host of it is held by an accepted older piece. Only
// pieces that share a host with another are looked at.
func (t *Table) settle() map[string]*Error {
	conflicts := map[string]*Error{}
	contended := map[string]bool{}
	for h := range t.contended {
		for _, k := range t.claims[h] {
			contended[k] = true
		}
	}
	order := make([]*Piece, 0, len(contended))
	for k := range contended {
		order = append(order, t.pieces[k])
	}
	sort.Slice(order, func(i, j int) bool { return order[i].Age < order[j].Age })
	held := map[string]string{}
	for _, p := range order {
		var clash, owner string
		for _, h := range scopedHosts(p) {
			if o, ok := held[h]; ok {
				clash, owner = h[2:], o
				break
			}
		}
		if clash != "" {
			conflicts[p.Key()] = errorf(ReasonHostConflict, "host %q is already served by ingress %s", clash, owner)
			continue
		}
		for _, h := range scopedHosts(p) {
			held[h] = p.Key()
		}
	}
	return conflicts
}
