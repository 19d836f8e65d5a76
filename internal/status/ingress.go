package status

import (
	"maps"
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/apis"

	"sluice.dev/sluice/translator"
)

// Ingress is one KIngress: what the API says of it, and which Envoys serve
// what Sluice serves for it now.
type Ingress struct {
	Ingress            string `json:"ingress"`
	Generation         int64  `json:"generation"`
	ObservedGeneration int64  `json:"observedGeneration"`
	Ready              string `json:"ready"` // the Ready condition: True, False or Unknown
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	// Current: the Ready condition is True and of the current generation
	// (what Knative waits for). Status stays at the last generation Ready
	// until the new one is served everywhere.
	Current bool `json:"current"`
	// Envoys lists every connected Envoy.
	Envoys      []IngressOnEnvoy `json:"envoys"`
	Unreachable []Unreachable    `json:"unreachable,omitempty"`
}

// IngressOnEnvoy is one ingress on one Envoy: Serving when its route
// configuration and the scopes of its hosts are all at the served version.
type IngressOnEnvoy struct {
	Node      string     `json:"node"`
	Replica   string     `json:"replica"`
	Serving   bool       `json:"serving"`
	Refusing  string     `json:"refusing,omitempty"` // see Envoy.Refusing
	State     string     `json:"state"`
	Resources []Resource `json:"resources"`
}

// ForIngress reads ing's own resources off every Envoy of f: its route
// configurations (translator.RouteNames) and the scopes of its hosts on
// each listener (translator.ScopeName), which are what its readiness
// waits for.
func ForIngress(f Fleet, ing *v1alpha1.Ingress) Ingress {
	out := Ingress{
		Ingress:            ing.Namespace + "/" + ing.Name,
		Generation:         ing.Generation,
		ObservedGeneration: ing.Status.ObservedGeneration,
		Ready:              "Unknown",
		Unreachable:        f.Unreachable,
	}
	if c := ing.Status.GetCondition(apis.ConditionReady); c != nil {
		out.Ready, out.Reason, out.Message = string(c.Status), c.Reason, c.Message
	}
	out.Current = out.Ready == "True" && out.ObservedGeneration == out.Generation
	hosts := map[string]bool{}
	for _, r := range ing.Spec.Rules {
		for _, h := range r.Hosts {
			hosts[strings.ToLower(h)] = true
		}
	}
	routes := translator.RouteNames(ing)
	for _, e := range f.Envoys {
		on := IngressOnEnvoy{Node: e.Node, Replica: e.Replica, State: Synced, Refusing: e.Refusing}
		add := func(typeURL, short, name string) {
			r, ok := e.resources[typeURL][name]
			if !ok {
				r = Resource{Name: name, State: Missing}
			}
			r.Type = short
			on.Resources = append(on.Resources, r)
			on.State = worse(on.State, r.State)
		}
		for _, name := range routes {
			add(resource.RouteType, "RDS", name)
		}
		for _, name := range slices.Sorted(maps.Keys(e.resources[resource.ScopedRouteType])) {
			if _, host, ok := strings.Cut(name, "/"); ok && hosts[host] {
				add(resource.ScopedRouteType, "SRDS", name)
			}
		}
		on.Serving = on.State == Synced && e.Refusing == ""
		out.Envoys = append(out.Envoys, on)
	}
	return out
}
