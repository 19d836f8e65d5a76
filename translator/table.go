package translator

import (
	"fmt"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Output is the full set of resources the gateway serves, sorted by name.
// Endpoints are not in it: compute them with LoadAssignment for every
// cluster in Backends whose Backend is not External.
type Output struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Scopes    []*routev3.ScopedRouteConfiguration
	Clusters  []*clusterv3.Cluster
	Secrets   []*tlsv3.Secret
	// Backends maps each EDS or DNS cluster to its Service port. It is the
	// Table's own map, updated in place by later Builds: read it only
	// under the lock that guards Build.
	Backends map[string]Backend
	// Edits says what this Build changed since the previous one, so that
	// a consumer need not compare everything.
	Edits Edits
}

// Edits names what one Build added, replaced or removed. All is set on the
// first Build of a table (everything is new).
type Edits struct {
	All bool
	// Names of the route configurations, scopes and clusters changed, sorted.
	Routes, Scopes, Clusters []string
	// Whether the (short) lists of secrets and listeners changed.
	Secrets, Listeners bool
}

// Table holds the current Piece of every ingress and assembles them. Host
// conflicts are settled here: the older ingress keeps the host, the newer
// one is rejected whole. It is not safe for concurrent use.
//
// Build is incremental: it patches the sorted resource lists with what the
// ingresses changed since the last Build, so one change among n ingresses
// costs one translation plus copying n pointers, not re-sorting n things.
// Each ingress has its own route configurations and scopes, so a change
// makes new resources of that ingress only.
type Table struct {
	cfg           Config
	defaultSecret *tlsv3.Secret

	pieces    map[string]*Piece
	keys      []string            // sorted keys of pieces
	claims    map[string][]string // scoped host -> keys of pieces claiming it
	contended map[string]bool     // scoped hosts with more than one claim

	// State of the last Build.
	conflicts map[string]*Error
	touched   map[string]bool   // keys Set or Deleted since
	changed   []string          // keys the last Build looked at again
	served    map[string]*Piece // the pieces the output is made of
	routes    []*routev3.RouteConfiguration
	scopes    []*routev3.ScopedRouteConfiguration
	clusters  []*clusterv3.Cluster
	refs      map[string]int // cluster name -> served pieces using it
	backends  map[string]Backend
	secrets   map[string]*counted
	tls       map[string][]TLSEntry // key -> entries of served pieces with TLS
	dirty     bool
	out       *Output
}

type counted struct {
	secret *tlsv3.Secret
	refs   int
}

// NewTable starts an empty table. defaultSecret, if not nil, is served on
// HTTPS for SNIs no ingress claims (see DefaultSecret).
func NewTable(cfg Config, defaultSecret *tlsv3.Secret) *Table {
	return &Table{
		cfg:           cfg,
		defaultSecret: defaultSecret,
		pieces:        map[string]*Piece{},
		claims:        map[string][]string{},
		contended:     map[string]bool{},
		conflicts:     map[string]*Error{},
		touched:       map[string]bool{},
		served:        map[string]*Piece{},
		refs:          map[string]int{},
		backends:      map[string]Backend{},
		secrets:       map[string]*counted{},
		tls:           map[string][]TLSEntry{},
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
	t.touched[key] = true
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
	t.touched[key] = true
	t.dirty = true
}

// Get returns the piece stored for key.
func (t *Table) Get(key string) (*Piece, bool) {
	p, ok := t.pieces[key]
	return p, ok
}

// Changed lists, sorted, the ingresses whose piece or conflict state the
// last Build took in again (Set, Deleted, or winning or losing a host);
// none when that Build had nothing to do. Read only.
func (t *Table) Changed() []string { return t.changed }

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

// Build assembles the resources of every served ingress. It reuses the
// last result when nothing changed (its Edits then repeat the last ones,
// which applying again changes nothing); the result must not be modified.
func (t *Table) Build() *Output {
	if !t.dirty {
		t.changed = nil
		return t.out
	}
	conflicts := t.settle()
	// Pieces whose contribution may differ from the last Build.
	changed := t.touched
	for k := range t.conflicts {
		changed[k] = true
	}
	for k := range conflicts {
		changed[k] = true
	}
	t.conflicts, t.touched = conflicts, map[string]bool{}
	t.changed = sortedKeys(changed)

	// Collect the edits, by name: nil removes, anything else (re)places.
	routeEdits := map[string]*routev3.RouteConfiguration{}
	scopeEdits := map[string]*routev3.ScopedRouteConfiguration{}
	if t.out == nil {
		routeEdits[RedirectRoutes] = redirectRoutes(&t.cfg)
	}
	clusterEdits := map[string]*clusterv3.Cluster{}
	if t.out == nil {
		// The config's: a new config is a new table.
		if c := tracingCluster(&t.cfg); c != nil {
			clusterEdits[c.Name] = c
		}
		if a := t.cfg.ExtAuthzAddress; a != "" {
			clusterEdits[ExtAuthzCluster] = serviceCluster(ExtAuthzCluster, a, t.cfg.ExtAuthzProtocol != ExtAuthzHTTP, &t.cfg)
		}
	}
	secretsChanged, tlsChanged := t.out == nil, t.out == nil
	for k := range changed {
		var now *Piece
		if p, ok := t.pieces[k]; ok && p.Err == nil && conflicts[k] == nil {
			now = p
		}
		was := t.served[k]
		if now == was {
			continue
		}
		if was != nil {
			for _, r := range was.Routes {
				if _, set := routeEdits[r.Name]; !set {
					routeEdits[r.Name] = nil
				}
			}
			for _, sc := range was.Scopes {
				if _, set := scopeEdits[sc.Name]; !set {
					scopeEdits[sc.Name] = nil
				}
			}
			for _, c := range was.Clusters {
				if t.refs[c.Name]--; t.refs[c.Name] == 0 {
					delete(t.refs, c.Name)
					delete(t.backends, c.Name)
					if _, set := clusterEdits[c.Name]; !set {
						clusterEdits[c.Name] = nil
					}
				}
			}
			for _, s := range was.Secrets {
				cs := t.secrets[s.Name]
				if cs.refs--; cs.refs == 0 {
					delete(t.secrets, s.Name)
				}
				secretsChanged = true
			}
			if len(was.TLS) > 0 {
				delete(t.tls, k)
				tlsChanged = true
			}
			delete(t.served, k)
		}
		if now != nil {
			for _, r := range now.Routes {
				routeEdits[r.Name] = r
			}
			for _, sc := range now.Scopes {
				scopeEdits[sc.Name] = sc
			}
			for _, c := range now.Clusters {
				t.refs[c.Name]++
				t.backends[c.Name] = now.Backends[c.Name]
				// A re-translated ingress brings equal clusters as new
				// pointers: keep the served one and spare the list copy.
				if pending, edited := clusterEdits[c.Name]; pending == nil {
					if i := sort.Search(len(t.clusters), func(i int) bool { return t.clusters[i].Name >= c.Name }); i < len(t.clusters) &&
						t.clusters[i].Name == c.Name && proto.Equal(t.clusters[i], c) {
						if edited {
							delete(clusterEdits, c.Name)
						}
						continue
					}
				}
				clusterEdits[c.Name] = c
			}
			for _, s := range now.Secrets {
				cs := t.secrets[s.Name]
				if cs == nil {
					cs = &counted{}
					t.secrets[s.Name] = cs
				}
				cs.secret = s
				cs.refs++
				secretsChanged = true
			}
			if len(now.TLS) > 0 {
				t.tls[k] = now.TLS
				tlsChanged = true
			}
			t.served[k] = now
		}
	}

	out := &Output{Backends: t.backends}
	if t.out != nil {
		*out = *t.out
	}
	out.Edits = Edits{
		All:       t.out == nil,
		Routes:    sortedKeys(routeEdits),
		Scopes:    sortedKeys(scopeEdits),
		Clusters:  sortedKeys(clusterEdits),
		Secrets:   secretsChanged,
		Listeners: tlsChanged,
	}
	if len(routeEdits) > 0 {
		t.routes = patchSorted(t.routes, routeEdits, func(r *routev3.RouteConfiguration) string { return r.Name })
		out.Routes = t.routes
	}
	if len(scopeEdits) > 0 || t.out == nil {
		t.scopes = patchSorted(t.scopes, scopeEdits, func(s *routev3.ScopedRouteConfiguration) string { return s.Name })
		out.Scopes = t.scopes
	}
	if len(clusterEdits) > 0 || t.out == nil {
		t.clusters = patchSorted(t.clusters, clusterEdits, func(c *clusterv3.Cluster) string { return c.Name })
		out.Clusters = t.clusters
	}
	if secretsChanged {
		secrets := make([]*tlsv3.Secret, 0, len(t.secrets)+2)
		for _, cs := range t.secrets {
			secrets = append(secrets, cs.secret)
		}
		if d := t.defaultSecret; d != nil && t.secrets[d.Name] == nil {
			secrets = append(secrets, d)
		}
		if ca := internalCASecret(&t.cfg); ca != nil {
			secrets = append(secrets, ca)
		}
		sort.Slice(secrets, func(i, j int) bool { return secrets[i].Name < secrets[j].Name })
		out.Secrets = secrets
	}
	if tlsChanged {
		out.Listeners = t.listeners()
	}
	t.out, t.dirty = out, false
	return out
}

func routeConfig(name string, vhs []*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: vhs,
		// A request that found a route here needs no lower-cased key.
		TypedPerFilterConfig: map[string]*anypb.Any{scopeKeyFilter: skipScopeKey},
		// The scope key is ours, not the backend's.
		RequestHeadersToRemove: []string{ScopeHeader},
		// gRPC clients send :authority with a port.
		IgnorePortInHostMatching: true,
		// Route-level headers win over virtual host and configuration
		// ones. Envoy applies a weighted cluster's headers before its
		// route's, so on a shared name the path's appendHeaders win over
		// a split's (as with net-istio and net-kourier); this flag does not
		// change that.
		MostSpecificHeaderMutationsWins: true,
		// validate_clusters stays off (the RDS default): a route to a
		// cluster still warming must not make Envoy reject every route.
	}
}
