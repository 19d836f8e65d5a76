package translator

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/http/header"
	"knative.dev/networking/pkg/ingress"
)

// Lookup gives the translator the cluster state an ingress references.
// The controller backs it with informer listers, the CLI with a file.
type Lookup interface {
	Service(namespace, name string) (*corev1.Service, bool)
	Secret(namespace, name string) (*corev1.Secret, bool)
}

// Reasons used in Error, and so in KIngress conditions.
const (
	ReasonInvalid         = "InvalidIngress"
	ReasonServiceNotFound = "ServiceNotFound"
	ReasonPortNotFound    = "PortNotFound"
	ReasonSecretNotFound  = "SecretNotFound"
	ReasonSecretInvalid   = "SecretInvalid"
	ReasonHostConflict    = "HostConflict"
)

// Error is why an ingress was rejected; Reason is CamelCase for conditions.
type Error struct {
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Message }

func errorf(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Backend says which Service port a cluster stands for, so EDS can be
// computed from EndpointSlices apart from the routes.
type Backend struct {
	Namespace string
	Service   string
	// PortName and Port identify the Service port; EndpointSlice ports carry
	// the Service port's name.
	PortName string
	Port     int32
	// External is set for ExternalName Services (no EDS).
	External bool
}

// TLSEntry is one SNI filter chain: the hosts and the SDS secret serving them.
type TLSEntry struct {
	Hosts  []string
	Secret string
}

// Piece is the translation of one ingress: everything it adds to the shared
// resources, plus what it depends on. Pieces are immutable once built.
type Piece struct {
	Namespace, Name string
	Generation      int64
	// Age orders claims on a host: the older ingress keeps it.
	Age string
	// Hash is ingress.ComputeHash, served on probe routes.
	Hash string

	// Routes is this ingress's route configuration, a virtual host per
	// rule (a slice for the tables' sake). Scopes, by name, send each host
	// there from each listener kind (see scopes.go).
	Routes []*routev3.RouteConfiguration
	Scopes []*routev3.ScopedRouteConfiguration

	Clusters []*clusterv3.Cluster
	Backends map[string]Backend // by cluster name
	Secrets  []*tlsv3.Secret
	TLS      []TLSEntry

	// Hosts claimed on the external and internal route configurations.
	ExternalHosts, InternalHosts []string

	// Services and Secrets referenced, for dependency tracking. They are
	// filled even when Err is set, so a missing one triggers a retry.
	Services   []types.NamespacedName
	SecretRefs []types.NamespacedName

	// Err is set when the ingress cannot be served; nothing else is then.
	Err *Error
	// Digest identifies the content: equal digests, equal resources.
	Digest string
}

// Key is "namespace/name".
func (p *Piece) Key() string { return p.Namespace + "/" + p.Name }

// Translate turns one ingress into a Piece. It never panics on bad input:
// problems come back in Piece.Err.
func Translate(ing *v1alpha1.Ingress, lookup Lookup, cfg *Config) *Piece {
	ing = ing.DeepCopy()
	p := &Piece{
		Namespace:  ing.Namespace,
		Name:       ing.Name,
		Generation: ing.Generation,
		Age:        ing.CreationTimestamp.UTC().Format("20060102T150405Z") + "/" + ing.Namespace + "/" + ing.Name,
		Backends:   map[string]Backend{},
	}
	if err := translate(p, ing, lookup, cfg); err != nil {
		*p = Piece{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation, Age: p.Age,
			Services: p.Services, SecretRefs: p.SecretRefs, Err: err}
	}
	p.Digest = digest(p)
	return p
}

func translate(p *Piece, ing *v1alpha1.Ingress, lookup Lookup, cfg *Config) *Error {
	// Validate before defaulting: SetDefaults dereferences rule.HTTP, which
	// Validate reports as missing.
	if fe := ing.Validate(context.Background()); fe != nil {
		return errorf(ReasonInvalid, "%s", strings.ReplaceAll(fe.Error(), "\n", "; "))
	}
	ing.SetDefaults(context.Background())
	if err := checkValues(ing); err != nil {
		return err
	}
	sum, err := ingress.ComputeHash(ing)
	if err != nil {
		return errorf(ReasonInvalid, "%v", err)
	}
	p.Hash = hex.EncodeToString(sum[:])

	// Collect references first so the controller can watch them even when
	// one of them is missing.
	svcRefs := sets.New[types.NamespacedName]()
	for _, rule := range ing.Spec.Rules {
		for _, path := range rule.HTTP.Paths {
			for _, split := range path.Splits {
				svcRefs.Insert(types.NamespacedName{Namespace: split.ServiceNamespace, Name: split.ServiceName})
			}
		}
	}
	p.Services = sortedNames(svcRefs)
	secretRefs := sets.New[types.NamespacedName]()
	for _, t := range ing.Spec.TLS {
		secretRefs.Insert(types.NamespacedName{Namespace: t.SecretNamespace, Name: t.SecretName})
	}
	p.SecretRefs = sortedNames(secretRefs)

	// Hosts: one owner per host and visibility inside this ingress too.
	extHosts, intHosts := sets.New[string](), sets.New[string]()
	for i, rule := range ing.Spec.Rules {
		for j, h := range rule.Hosts {
			h = strings.ToLower(h)
			if intHosts.Has(h) {
				return errorf(ReasonInvalid, "spec.rules[%d].hosts[%d]: host %q appears in more than one rule", i, j, h)
			}
			intHosts.Insert(h)
			if rule.Visibility == v1alpha1.IngressVisibilityExternalIP {
				extHosts.Insert(h)
			}
		}
	}
	p.ExternalHosts, p.InternalHosts = sets.List(extHosts), sets.List(intHosts)

	clusters := map[string]*clusterv3.Cluster{}
	redirected := ing.Spec.HTTPOption == v1alpha1.HTTPOptionRedirected
	var vhosts, challengeHosts []*routev3.VirtualHost
	for i, rule := range ing.Spec.Rules {
		routes := make([]*routev3.Route, 0, 2*len(rule.HTTP.Paths))
		var probes []*routev3.Route
		for j, path := range rule.HTTP.Paths {
			field := fmt.Sprintf("spec.rules[%d].http.paths[%d]", i, j)
			action, err := routeAction(path, field, lookup, clusters, p.Backends, cfg)
			if err != nil {
				return err
			}
			name := fmt.Sprintf("%s/%s/r%d/p%d", ing.Namespace, ing.Name, i, j)
			probe, route := newRoute(name+"/probe", path, action, p.Hash, true), newRoute(name, path, action, p.Hash, false)
			probe.Tracing = routeTracing(cfg, ing.Namespace, ing.Name)
			route.Tracing = probe.Tracing // protos are never changed once built
			probe.TypedPerFilterConfig = extAuthzRoute(cfg, ing.Namespace, ing.Name, string(rule.Visibility), path.Path, true)
			route.TypedPerFilterConfig = extAuthzRoute(cfg, ing.Namespace, ing.Name, string(rule.Visibility), path.Path, false)
			probes, routes = append(probes, probe), append(routes, route)
		}
		// Probe copies go first, like ingress.InsertProbe does.
		routes = append(probes, routes...)
		hosts := make([]string, len(rule.Hosts))
		for j, h := range rule.Hosts {
			hosts[j] = strings.ToLower(h)
		}
		sort.Strings(hosts)
		vh := &routev3.VirtualHost{Name: fmt.Sprintf("%s/%s/r%d", ing.Namespace, ing.Name, i), Domains: hosts, Routes: routes}
		vhosts = append(vhosts, vh)
		if redirected && rule.Visibility == v1alpha1.IngressVisibilityExternalIP {
			if ch := challengeHost(vh, cfg); ch != nil {
				challengeHosts = append(challengeHosts, ch)
			}
		}
	}
	// One route configuration for every visibility: only external hosts
	// have scopes on the external listeners. Plain HTTP of a redirected
	// ingress goes to the redirect, or to its challenge routes (acme.go).
	routes := IngressRoutes(ing.Namespace, ing.Name)
	p.Routes = []*routev3.RouteConfiguration{withCORS(routeConfig(routes, vhosts), cfg)}
	httpRoutes, challenged := HTTPRoutes(ing.Namespace, ing.Name), map[string]bool{}
	if len(challengeHosts) > 0 {
		p.Routes = append(p.Routes, withCORS(routeConfig(httpRoutes, challengeHosts), cfg))
		for _, vh := range challengeHosts {
			for _, h := range vh.Domains {
				challenged[h] = true
			}
		}
	}
	for _, h := range p.ExternalHosts {
		plain := routes
		switch {
		case challenged[h]:
			plain = httpRoutes
		case redirected:
			plain = RedirectRoutes
		}
		p.Scopes = append(p.Scopes, scope(ExternalHTTP, h, plain), scope(ExternalHTTPS, h, routes))
	}
	for _, h := range p.InternalHosts {
		p.Scopes = append(p.Scopes, scope(InternalRoutes, h, routes))
	}
	sort.Slice(p.Scopes, func(a, b int) bool { return p.Scopes[a].Name < p.Scopes[b].Name })
	for _, name := range sortedKeys(clusters) {
		p.Clusters = append(p.Clusters, clusters[name])
	}

	tlsHosts := sets.New[string]()
	for i, t := range ing.Spec.TLS {
		field := fmt.Sprintf("spec.tls[%d]", i)
		sec, ok := lookup.Secret(t.SecretNamespace, t.SecretName)
		if !ok {
			return errorf(ReasonSecretNotFound, "%s: secret %s/%s not found", field, t.SecretNamespace, t.SecretName)
		}
		s, err := secretResource(sec)
		if err != nil {
			return errorf(ReasonSecretInvalid, "%s: %v", field, err)
		}
		var hosts []string
		for j, h := range t.Hosts {
			h = strings.ToLower(h)
			if tlsHosts.Has(h) {
				return errorf(ReasonInvalid, "%s.hosts[%d]: host %q is in more than one tls entry", field, j, h)
			}
			tlsHosts.Insert(h)
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		p.Secrets = append(p.Secrets, s)
		p.TLS = append(p.TLS, TLSEntry{Hosts: hosts, Secret: s.Name})
	}
	sort.Slice(p.TLS, func(a, b int) bool { return p.TLS[a].Hosts[0] < p.TLS[b].Hosts[0] })
	p.Secrets = dedupeSecrets(p.Secrets)
	return nil
}

func routeAction(path v1alpha1.HTTPIngressPath, field string, lookup Lookup,
	clusters map[string]*clusterv3.Cluster, backends map[string]Backend, cfg *Config) (*routev3.RouteAction, *Error) {
	wcs := make([]*routev3.WeightedCluster_ClusterWeight, 0, len(path.Splits))
	for k, split := range path.Splits {
		sfield := fmt.Sprintf("%s.splits[%d]", field, k)
		c, b, err := clusterFor(split.IngressBackend, sfield, lookup, cfg)
		if err != nil {
			return nil, err
		}
		clusters[c.Name] = c
		backends[c.Name] = b
		wcs = append(wcs, &routev3.WeightedCluster_ClusterWeight{
			Name:                c.Name,
			Weight:              wrapperspb.UInt32(uint32(split.Percent)),
			RequestHeadersToAdd: headersToSet(split.AppendHeaders),
		})
	}
	a := &routev3.RouteAction{
		// The KIngress contract: no request timeout, no retries. WebSocket
		// upgrades are enabled on the connection manager for every route.
		Timeout: durationpb.New(0),
	}
	if len(wcs) == 1 && len(wcs[0].RequestHeadersToAdd) == 0 {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: wcs[0].Name}
	} else {
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: wcs}}
	}
	if path.RewriteHost != "" {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: path.RewriteHost}
	}
	return a, nil
}

func newRoute(name string, path v1alpha1.HTTPIngressPath, action *routev3.RouteAction, hash string, probe bool) *routev3.Route {
	prefix := path.Path
	if prefix == "" {
		prefix = "/"
	}
	m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}}
	for _, k := range sortedKeys(path.Headers) {
		if probe && strings.EqualFold(k, header.HashKey) {
			continue
		}
		m.Headers = append(m.Headers, exactHeader(k, path.Headers[k].Exact))
	}
	add := headersToSet(path.AppendHeaders)
	if probe {
		m.Headers = append(m.Headers, exactHeader(header.HashKey, header.HashValueOverride))
		add = append(add, setHeader(header.HashKey, hash))
	}
	return &routev3.Route{
		Name:                name,
		Match:               m,
		Action:              &routev3.Route_Route{Route: action},
		RequestHeadersToAdd: add,
	}
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{
		Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value},
		}},
	}
}

// headersToSet overwrites client values: appendHeaders have set semantics.
func headersToSet(h map[string]string) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, k := range sortedKeys(h) {
		out = append(out, setHeader(k, h[k]))
	}
	return out
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		// Envoy reads header values as format strings: keep them literal.
		Header:       &corev3.HeaderValue{Key: k, Value: strings.ReplaceAll(v, "%", "%%")},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedNames(s sets.Set[types.NamespacedName]) []types.NamespacedName {
	out := s.UnsortedList()
	sort.Slice(out, func(a, b int) bool { return out[a].String() < out[b].String() })
	return out
}

func dedupeSecrets(in []*tlsv3.Secret) []*tlsv3.Secret {
	sort.Slice(in, func(a, b int) bool { return in[a].Name < in[b].Name })
	out := in[:0]
	for i, s := range in {
		if i == 0 || s.Name != in[i-1].Name {
			out = append(out, s)
		}
	}
	return out
}
