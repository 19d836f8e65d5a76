package translator

import (
	"testing"

	"fmt"
	"net/netip"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// validateDeep runs ValidateAll on m and on every message packed in an Any
// inside it (HCM, router, TLS contexts, upstream protocol options), which
// the generated ValidateAll does not look into.
func validateDeep(m proto.Message) []error {
	var errs []error
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := proto.Marshal(m); err != nil {
		errs = append(errs, fmt.Errorf("marshal: %v", err))
	}
	var walk func(protoreflect.Message)
	walk = func(msg protoreflect.Message) {
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				errs = append(errs, fmt.Errorf("any %s: %v", a.TypeUrl, err))
				return
			}
			if v, ok := inner.(validator); ok {
				if err := v.ValidateAll(); err != nil {
					errs = append(errs, fmt.Errorf("%s: %v", a.TypeUrl, err))
				}
			} else {
				errs = append(errs, fmt.Errorf("%s: no ValidateAll", a.TypeUrl))
			}
			walk(inner.ProtoReflect())
			return
		}
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(l.Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message())
					return true
				})
			case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
				walk(v.Message())
			}
			return true
		})
	}
	walk(m.ProtoReflect())
	return errs
}

// unpack returns the message inside an Any, or nil.
func unpack[T proto.Message](a *anypb.Any) T {
	var zero T
	if a == nil {
		return zero
	}
	m, err := a.UnmarshalNew()
	if err != nil {
		return zero
	}
	t, _ := m.(T)
	return t
}

// envoyRules checks what Envoy itself refuses beyond the proto rules (so
// a NACK in production), and that the resources hang together: every
// cluster a route names exists, every SDS secret a listener names exists,
// every EDS cluster has an assignment.
func envoyRules(res *Result) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	o := res.Output
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range o.Clusters {
		if clusters[c.Name] != nil {
			bad("cluster %s: duplicate", c.Name)
		}
		clusters[c.Name] = c
		if c.GetType() == clusterv3.Cluster_STATIC {
			for _, l := range c.GetLoadAssignment().GetEndpoints() {
				for _, e := range l.GetLbEndpoints() {
					if _, err := netip.ParseAddr(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()); err != nil {
						bad("cluster %s: STATIC endpoint is not an IP: %v", c.Name, err)
					}
				}
			}
		}
	}
	eds := map[string]bool{}
	for _, e := range res.Endpoints {
		eds[e.ClusterName] = true
	}
	for _, c := range o.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !eds[c.Name] {
			bad("cluster %s: EDS without an assignment", c.Name)
		}
	}
	secrets := map[string]bool{}
	for _, s := range o.Secrets {
		secrets[s.Name] = true
	}
	checkHeaders := func(where string, hs []*corev3.HeaderValueOption) {
		for _, h := range hs {
			k := h.GetHeader().GetKey()
			if strings.HasPrefix(k, ":") || strings.EqualFold(k, "host") {
				bad("%s: header %q may not be modified", where, k)
			}
			if strings.Contains(strings.ReplaceAll(h.GetHeader().GetValue(), "%%", ""), "%") {
				bad("%s: header %q: unescaped %% in %q", where, k, h.GetHeader().GetValue())
			}
		}
	}
	routeNames := map[string]bool{}
	for _, rc := range o.Routes {
		routeNames[rc.Name] = true
		names, domains := map[string]bool{}, map[string]bool{}
		for _, vh := range rc.VirtualHosts {
			if names[vh.Name] {
				bad("route %s: duplicate virtual host %s", rc.Name, vh.Name)
			}
			names[vh.Name] = true
			for _, d := range vh.Domains {
				if domains[strings.ToLower(d)] {
					bad("route %s: duplicate domain %s", rc.Name, d)
				}
				domains[strings.ToLower(d)] = true
			}
			for _, r := range vh.Routes {
				where := fmt.Sprintf("route %s/%s", rc.Name, r.Name)
				checkHeaders(where, r.RequestHeadersToAdd)
				a := r.GetRoute()
				if a == nil {
					if r.GetRedirect() == nil {
						bad("%s: neither route nor redirect", where)
					}
					continue
				}
				if c := a.GetCluster(); c != "" && clusters[c] == nil {
					bad("%s: unknown cluster %s", where, c)
				}
				if wc := a.GetWeightedClusters(); wc != nil {
					sum := 0
					for _, cw := range wc.Clusters {
						sum += int(cw.GetWeight().GetValue())
						if clusters[cw.Name] == nil {
							bad("%s: unknown cluster %s", where, cw.Name)
						}
						checkHeaders(where, cw.RequestHeadersToAdd)
					}
					if sum == 0 {
						bad("%s: weights sum to 0", where)
					}
				}
			}
		}
	}
	// Envoy: scope names are unique, and so are the keys of one scope set.
	scopeNames, scopeKeys := map[string]bool{}, map[string]bool{}
	for _, sc := range o.Scopes {
		if scopeNames[sc.Name] {
			bad("scope %s: duplicate", sc.Name)
		}
		scopeNames[sc.Name] = true
		fs := sc.GetKey().GetFragments()
		if len(fs) != 1 || fs[0].GetStringKey() != sc.Name {
			bad("scope %s: key is not its name", sc.Name)
		}
		if scopeKeys[fs[0].GetStringKey()] {
			bad("scope %s: duplicate key", sc.Name)
		}
		scopeKeys[fs[0].GetStringKey()] = true
		if !routeNames[sc.RouteConfigurationName] {
			bad("scope %s: unknown route configuration %q", sc.Name, sc.RouteConfigurationName)
		}
	}
	ports := map[uint32]bool{}
	for _, l := range o.Listeners {
		port := l.GetAddress().GetSocketAddress().GetPortValue()
		if ports[port] {
			bad("listener %s: port %d used twice", l.Name, port)
		}
		ports[port] = true
		if _, err := netip.ParseAddr(l.GetAddress().GetSocketAddress().GetAddress()); err != nil {
			bad("listener %s: %v", l.Name, err)
		}
		chainNames, serverNames := map[string]bool{}, map[string]bool{}
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(append([]*listenerv3.FilterChain{}, chains...), l.DefaultFilterChain)
		}
		if len(chains) == 0 {
			bad("listener %s: no filter chains", l.Name)
		}
		for _, fc := range chains {
			if chainNames[fc.Name] {
				bad("listener %s: duplicate filter chain name %q", l.Name, fc.Name)
			}
			chainNames[fc.Name] = true
			for _, sn := range fc.GetFilterChainMatch().GetServerNames() {
				if strings.Contains(strings.TrimPrefix(sn, "*."), "*") {
					bad("listener %s: partial wildcard server name %q", l.Name, sn)
				}
				if serverNames[strings.ToLower(sn)] {
					bad("listener %s: server name %q in two filter chains", l.Name, sn)
				}
				serverNames[strings.ToLower(sn)] = true
			}
			if ts := fc.TransportSocket; ts != nil {
				ctx := unpack[*tlsv3.DownstreamTlsContext](ts.GetTypedConfig())
				if ctx == nil {
					bad("listener %s: transport socket is not a DownstreamTlsContext", l.Name)
				}
				for _, s := range ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs() {
					if !secrets[s.Name] {
						bad("listener %s: unknown SDS secret %s", l.Name, s.Name)
					}
				}
			}
			for _, f := range fc.Filters {
				m := unpack[*hcmv3.HttpConnectionManager](f.GetTypedConfig())
				if m == nil {
					bad("listener %s: filter %s is not an HCM", l.Name, f.Name)
					continue
				}
				sr := m.GetScopedRoutes()
				if sr.GetScopedRds() == nil || sr.GetName() == "" {
					bad("listener %s: connection manager without scoped routes over SRDS", l.Name)
				}
				for _, fb := range sr.GetScopeKeyBuilder().GetFragments() {
					// Required by Envoy, though protoc-gen-validate lets it pass.
					if fb.GetHeaderValueExtractor().GetExtractType() == nil {
						bad("listener %s: scope key fragment without extract_type", l.Name)
					}
				}
				if e := m.GetEarlyHeaderMutationExtensions(); len(e) != 1 || e[0].GetName() != "envoy.http.early_header_mutation.header_mutation" {
					bad("listener %s: the scope key is not set by an early header mutation", l.Name)
				}
				if f := m.GetHttpFilters(); len(f) < 2 || f[0].GetName() != scopeKeyFilter {
					bad("listener %s: the lower-case scope key filter does not come first", l.Name)
				}
			}
		}
	}
	return errs
}

// checkResult is validateAll without a testing.TB, for the fuzzer.
func checkResult(res *Result) []error {
	var errs []error
	add := func(kind, name string, m proto.Message) {
		for _, err := range validateDeep(m) {
			errs = append(errs, fmt.Errorf("%s %s: %v", kind, name, err))
		}
	}
	o := res.Output
	for _, r := range o.Listeners {
		add("listener", r.Name, r)
	}
	for _, r := range o.Routes {
		add("route", r.Name, r)
	}
	for _, r := range o.Scopes {
		add("scope", r.Name, r)
	}
	for _, r := range o.Clusters {
		add("cluster", r.Name, r)
	}
	for _, r := range o.Secrets {
		add("secret", r.Name, r)
	}
	for _, r := range res.Endpoints {
		add("endpoints", r.ClusterName, r)
	}
	return append(errs, envoyRules(res)...)
}

// The checker must see into Any fields, or it proves nothing.
func TestValidateDeepSeesInsideAny(t *testing.T) {
	cfg := DefaultConfig()
	l := httpListener(ExternalHTTP, 8080, ExternalHTTP, &cfg)
	if errs := validateDeep(l); len(errs) != 0 {
		t.Fatalf("valid listener: %v", errs)
	}
	bad := hcm("", ExternalHTTP, &cfg) // stat_prefix is required
	l.FilterChains[0].Filters[0] = bad
	if errs := validateDeep(l); len(errs) == 0 {
		t.Fatal("an HCM without stat_prefix inside a listener passed")
	}
	ctx := downstreamTLS("", &Config{})
	if errs := validateDeep(ctx); len(errs) == 0 {
		t.Fatal("an SDS config without a name inside a TLS context passed")
	}
}
