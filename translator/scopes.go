package translator

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Routing is scoped (Envoy's SRDS) so that one ingress's change sends one
// ingress's resources. Every ingress has one route configuration
// (IngressRoutes), a virtual host per rule, and every host it serves has a
// scope per listener kind pointing at it: the scopes, not the route
// configuration, say which hosts a listener serves, so the external
// listeners never reach a cluster-local rule. A connection manager
// picks the scope whose key is its scope set's name and the request's host,
// lower-cased and without the port (scopekey.go says how). No scope: Envoy
// answers 404, as for an unknown host before.
//
// Scopes are named by their key, so a host moving between ingresses is an
// update of one scope, never two scopes with one key.

// RedirectRoutes is the route configuration of every redirected host on
// plain HTTP: one virtual host that answers 301 to https.
const RedirectRoutes = "https-redirect"

const ingressRoutesPrefix = "ingress/"

// IngressRoutes names the route configuration of the ingress namespace/name.
func IngressRoutes(namespace, name string) string {
	return ingressRoutesPrefix + namespace + "/" + name
}

// RoutesOwner is the key ("namespace/name") of the ingress whose route
// configuration (IngressRoutes or HTTPRoutes) is named name, if it is one.
func RoutesOwner(name string) (string, bool) {
	for _, prefix := range []string{ingressRoutesPrefix, httpRoutesPrefix} {
		if key, ok := strings.CutPrefix(name, prefix); ok {
			return key, strings.Count(key, "/") == 1
		}
	}
	return "", false
}

// ScopeName is the name and key of the scope of host on the listeners whose
// connection managers use scopes (ExternalHTTP, ExternalHTTPS or
// InternalRoutes).
func ScopeName(scopes, host string) string { return scopes + "/" + host }

func scope(scopes, host, routes string) *routev3.ScopedRouteConfiguration {
	key := ScopeName(scopes, host)
	return &routev3.ScopedRouteConfiguration{
		Name:                   key,
		RouteConfigurationName: routes,
		Key: &routev3.ScopedRouteConfiguration_Key{Fragments: []*routev3.ScopedRouteConfiguration_Key_Fragment{{
			Type: &routev3.ScopedRouteConfiguration_Key_Fragment_StringKey{StringKey: key},
		}}},
	}
}

// redirectRoute answers 301 to https for every path.
func redirectRoute(cfg *Config) *routev3.Route {
	r := &routev3.Route{
		Name:  RedirectRoutes,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
			ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
		}},
	}
	if cfg.ExtAuthzAddress != "" {
		extAuthzOff(r) // the redirect answers by itself
	}
	return r
}

func redirectRoutes(cfg *Config) *routev3.RouteConfiguration {
	return routeConfig(RedirectRoutes, []*routev3.VirtualHost{{Name: RedirectRoutes, Domains: []string{"*"}, Routes: []*routev3.Route{redirectRoute(cfg)}}})
}
