package translator

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// ACME HTTP-01 challenges under httpOption Redirected. With external-domain
// TLS, Serving keeps the ingress Redirected and merges the challenge path
// (/.well-known/acme-challenge/<token>) into the rule of the host being
// certified. The ACME server asks over plain HTTP, and a redirect would
// send it to HTTPS, where the certificate does not exist yet. So a
// redirected rule with challenge paths has its plain-HTTP scopes point at
// a route configuration of the ingress's own (HTTPRoutes): the challenge
// routes as the KIngress says, then the redirect for everything else.
// Rules without challenge paths keep the shared RedirectRoutes.

// acmePrefix is where ACME HTTP-01 challenges are answered.
const acmePrefix = "/.well-known/acme-challenge/"

const httpRoutesPrefix = "ingress-http/"

// HTTPRoutes names the plain-HTTP route configuration of the redirected
// ingress namespace/name that has challenge paths.
func HTTPRoutes(namespace, name string) string {
	return httpRoutesPrefix + namespace + "/" + name
}

func isChallenge(path string) bool { return strings.HasPrefix(path, acmePrefix) }

// challengeHost is the plain-HTTP virtual host of a redirected rule whose
// virtual host is vh: its challenge routes (probe copies too), then the
// redirect. nil when the rule has no challenge path.
func challengeHost(vh *routev3.VirtualHost, cfg *Config) *routev3.VirtualHost {
	var routes []*routev3.Route
	for _, r := range vh.Routes {
		if isChallenge(r.Match.GetPrefix()) {
			routes = append(routes, r)
		}
	}
	if len(routes) == 0 {
		return nil
	}
	return &routev3.VirtualHost{Name: vh.Name, Domains: vh.Domains, Routes: append(routes, redirectRoute(cfg))}
}

// RouteNames are the names of ing's route configurations as Translate
// makes them: IngressRoutes, and HTTPRoutes when it is redirected and an
// external rule has a challenge path.
func RouteNames(ing *v1alpha1.Ingress) []string {
	names := []string{IngressRoutes(ing.Namespace, ing.Name)}
	if ing.Spec.HTTPOption != v1alpha1.HTTPOptionRedirected {
		return names
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil || rule.Visibility == v1alpha1.IngressVisibilityClusterLocal {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			if isChallenge(p.Path) {
				return append(names, HTTPRoutes(ing.Namespace, ing.Name))
			}
		}
	}
	return names
}
