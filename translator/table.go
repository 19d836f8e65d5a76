package translator

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Output is the full set of resources the gateway serves, sorted by name.
// Endpoints are not in it: compute them with LoadAssignment for every
// cluster in Backends whose Backend is not External.
type Output struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Secrets   []*tlsv3.Secret
	// Backends maps each EDS or DNS cluster to its Service port. Shared
	// with the Table: read only.
	Backends map[string]Backend
}

// Table holds the current Piece of every ingress and assembles them. Host
// conflicts are settled here: the older ingress keeps the host, the newer
// one is rejected whole. It is not safe for concurrent use.
type Table struct {
	cfg           Config
	defaultSecret *tlsv3.Secret

	pieces map[string]*Piece
	keys   []string            // sorted keys of pieces
	claims map[string][]string // scoped host -> keys of pieces claiming it

	// Derived on Build, reused while nothing they depend on changed.
	accepted  map[string]bool
	conflicts map[string]*Error
	dirty     bool
	out       *Output
}

// NewTable starts an empty table. defaultSecret, if not nil, is served on
// HTTPS for SNIs no ingress claims (see DefaultSecret).
func NewTable(cfg Config, defaultSecret *tlsv3.Secret) *Table {
	return &Table{
		cfg:           cfg,
		defaultSecret: defaultSecret,
		pieces:        map[string]*Piece{},
		claims:        map[string][]string{},
		dirty:         true,
	}
}

// DefaultSecret resolves Config.DefaultCertificate.
func DefaultSecret(cfg *Config, lookup Lookup) (*tlsv3.Secret, error) {
	if cfg.DefaultCertificate == "" {
		return nil, nil
	}
	ns, name, ok := splitKey(cfg.DefaultCertificate)
	if !ok {
		return nil, fmt.Errorf("defaultCertificate: %q is not namespace/name", cfg.DefaultCertificate)
	}
	s, found := lookup.Secret(ns, name)
	if !found {
		return nil, fmt.Errorf("defaultCertificate: secret %s not found", cfg.DefaultCertificate)
	}
	sec, err := secretResource(s)
	if err != nil {
		return nil, fmt.Errorf("defaultCertificate: %v", err)
	}
	return sec, nil
}

func splitKey(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}

// Set adds or replaces the piece of one ingress.
func (t *Table) Set(p *Piece) {
	key := p.Key()
	if old, ok := t.pieces[key]; ok {
		t.unclaim(old)
	} else {
		i := sort.SearchStrings(t.keys, key)
		t.keys = append(t.keys, "")
		copy(t.keys[i+1:], t.keys[i:])
		t.keys[i] = key
	}
	t.pieces[key] = p
	t.claim(p)
	t.dirty = true
}

// Delete removes the piece of one ingress.
func (t *Table) Delete(key string) {
	old, ok := t.pieces[key]
	if !ok {
		return
	}
	t.unclaim(old)
	delete(t.pieces, key)
	i := sort.SearchStrings(t.keys, key)
	t.keys = append(t.keys[:i], t.keys[i+1:]...)
	t.dirty = true
}

// Get returns the piece stored for key.
func (t *Table) Get(key string) (*Piece, bool) {
	p, ok := t.pieces[key]
	return p, ok
}

// Keys lists the ingresses in the table, sorted. Read only.
func (t *Table) Keys() []string { return t.keys }

// Len is the number of ingresses in the table.
func (t *Table) Len() int { return len(t.pieces) }

// Status says whether the ingress is served: nil when it is, else why not
// (its own translation error or a host conflict). Valid after Build.
func (t *Table) Status(key string) *Error {
	p, ok := t.pieces[key]
	if !ok {
		return nil
	}
	if p.Err != nil {
		return p.Err
	}
	return t.conflicts[key]
}

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
	}
}

// settle decides which contended pieces are served: in age order, a piece
// is accepted unless a host of it is held by an accepted older piece. Only
// pieces that share a host with another are looked at.
func (t *Table) settle() {
	t.conflicts = map[string]*Error{}
	contended := map[string]bool{}
	for _, ks := range t.claims {
		if len(ks) > 1 {
			for _, k := range ks {
				contended[k] = true
			}
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
			t.conflicts[p.Key()] = errorf(ReasonHostConflict, "host %q is already served by ingress %s", clash, owner)
			continue
		}
		for _, h := range scopedHosts(p) {
			held[h] = p.Key()
		}
	}
}

// Build assembles the resources of every served ingress. It reuses the
// last result when nothing changed; the result must not be modified.
func (t *Table) Build() *Output {
	if !t.dirty {
		return t.out
	}
	t.settle()
	cfg := &t.cfg
	var ext, extPlain, internal []*routev3.VirtualHost
	clusters := map[string]*clusterv3.Cluster{}
	backends := map[string]Backend{}
	secrets := map[string]*tlsv3.Secret{}
	var tlsEntries []TLSEntry
	for _, k := range t.keys {
		p := t.pieces[k]
		if p.Err != nil || t.conflicts[k] != nil {
			continue
		}
		ext = append(ext, p.External...)
		extPlain = append(extPlain, p.ExternalPlain...)
		internal = append(internal, p.Internal...)
		for _, c := range p.Clusters {
			clusters[c.Name] = c
			backends[c.Name] = p.Backends[c.Name]
		}
		for _, s := range p.Secrets {
			secrets[s.Name] = s
		}
		tlsEntries = append(tlsEntries, p.TLS...)
	}
	sort.Slice(tlsEntries, func(i, j int) bool { return tlsEntries[i].Hosts[0] < tlsEntries[j].Hosts[0] })

	defaultName := ""
	if t.defaultSecret != nil {
		defaultName = t.defaultSecret.Name
		secrets[defaultName] = t.defaultSecret
	}
	out := &Output{Backends: backends}
	for _, l := range []*listenerv3.Listener{
		httpListener(ExternalHTTP, cfg.ExternalHTTPPort, ExternalHTTP, cfg),
		httpsListener(ExternalHTTPS, cfg.ExternalHTTPSPort, ExternalHTTPS, tlsEntries, defaultName, cfg),
		httpListener(InternalHTTP, cfg.InternalHTTPPort, InternalRoutes, cfg),
		httpsListener(InternalHTTPS, cfg.InternalHTTPSPort, InternalRoutes, tlsEntries, defaultName, cfg),
	} {
		if l != nil {
			out.Listeners = append(out.Listeners, l)
		}
	}
	out.Routes = []*routev3.RouteConfiguration{
		routeConfig(ExternalHTTP, extPlain),
		routeConfig(ExternalHTTPS, ext),
		routeConfig(InternalRoutes, internal),
	}
	for _, name := range sortedKeys(clusters) {
		out.Clusters = append(out.Clusters, clusters[name])
	}
	for _, name := range sortedKeys(secrets) {
		out.Secrets = append(out.Secrets, secrets[name])
	}
	t.out, t.dirty = out, false
	return out
}

func routeConfig(name string, vhs []*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: vhs,
		// gRPC clients send :authority with a port.
		IgnorePortInHostMatching: true,
		// A split's appendHeaders override its path's.
		MostSpecificHeaderMutationsWins: true,
		// validate_clusters stays off (the RDS default): a route to a
		// cluster still warming must not make Envoy reject every route.
	}
}
