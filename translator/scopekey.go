package translator

import (
	"fmt"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	earlymutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
)

// The scope key of a request is "<scope set>/<host>" (ScopeName), the
// host lower-cased and without its port. Every connection manager receives
// every scope (SRDS subscriptions are wildcard), so the set's name keeps
// the keys of the listener kinds apart.
//
// Envoy's own code builds it: an early header mutation, which runs before
// the scope is chosen, sets ScopeHeader to the set's name and :authority,
// and the key builder takes what comes before the first ':' (the port).
// Scope keys match exactly, so a host with upper-case letters finds no
// scope, hence no route. For those requests only, a Lua filter writes the
// key lower-cased, which makes Envoy choose the scope and route again.
// Envoy builds a stream's filters once it has looked for a route, and
// every route configuration of ours disables the Lua filter
// (skipScopeKey): a request that found a route never runs it. A Lua filter
// on every request cost about 10 % of the requests per core
// (docs/benchmarks.md, data plane).

// ScopeHeader carries the scope key to the scope lookup. Any value a
// client sends is replaced, and the header is removed before the request
// goes upstream.
const ScopeHeader = "x-sluice-scope"

// scopeKeyFilter is the name of the Lua filter that lower-cases the key.
const scopeKeyFilter = "envoy.filters.http.lua"

// skipScopeKey disables scopeKeyFilter where a route configuration has it.
var skipScopeKey = mustAny(&routev3.FilterConfig{Disabled: true})

// scopeKeyMutation sets ScopeHeader to "<scopes>/<:authority>".
func scopeKeyMutation(scopes string) *corev3.TypedExtensionConfig {
	return &corev3.TypedExtensionConfig{
		Name: "envoy.http.early_header_mutation.header_mutation",
		TypedConfig: mustAny(&earlymutationv3.HeaderMutation{Mutations: []*mutationv3.HeaderMutation{{
			Action: &mutationv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: ScopeHeader, Value: scopes + "/%REQ(:AUTHORITY)%"},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}}}),
	}
}

// scopedRoutes is the route specifier of a connection manager serving the
// scopes named scopes: the key is ScopeHeader up to a port.
func scopedRoutes(scopes string) *hcmv3.HttpConnectionManager_ScopedRoutes {
	return &hcmv3.HttpConnectionManager_ScopedRoutes{ScopedRoutes: &hcmv3.ScopedRoutes{
		Name: scopes,
		ScopeKeyBuilder: &hcmv3.ScopedRoutes_ScopeKeyBuilder{Fragments: []*hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder{{
			Type: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_{
				HeaderValueExtractor: &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor{
					Name:             ScopeHeader,
					ElementSeparator: ":",
					ExtractType:      &hcmv3.ScopedRoutes_ScopeKeyBuilder_FragmentBuilder_HeaderValueExtractor_Index{Index: 0},
				},
			},
		}}},
		RdsConfigSource: adsSource(),
		ConfigSpecifier: &hcmv3.ScopedRoutes_ScopedRds{ScopedRds: &hcmv3.ScopedRds{
			ScopedRdsConfigSource: adsSource(),
		}},
	}}
}

// lowerCaseKey rewrites ScopeHeader lower-cased; it runs only for requests
// that found no route (see above). Envoy chooses the scope again when a
// filter changes headers (the Lua filter clears the route cache).
func lowerCaseKey(scopes string) *hcmv3.HttpFilter {
	src := fmt.Sprintf(`function envoy_on_request(h)
  local host = h:headers():get(":authority") or ""
  h:headers():replace(%q, %q .. string.lower(string.match(host, "^[^:]*")))
end
`, ScopeHeader, scopes+"/")
	return &hcmv3.HttpFilter{
		Name: scopeKeyFilter,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&luav3.Lua{
			DefaultSourceCode: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: src}},
		})},
	}
}
