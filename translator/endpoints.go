package translator

import (
	"sort"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// LoadAssignment computes the EDS resource of one cluster from the
// EndpointSlices of its Service: ready endpoints only, on the port the
// slice gives for the Service port. No ready endpoint gives an empty
// assignment, which keeps the cluster (and so the routes) valid.
func LoadAssignment(cluster string, b Backend, slices []*discoveryv1.EndpointSlice) *endpointv3.ClusterLoadAssignment {
	type hostPort struct {
		host string
		port uint32
	}
	seen := map[hostPort]bool{}
	var eps []hostPort
	for _, s := range slices {
		if s.Labels[discoveryv1.LabelServiceName] != b.Service || s.Namespace != b.Namespace {
			continue
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port, ok := slicePort(s, b.PortName)
		if !ok {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				hp := hostPort{a, port}
				if !seen[hp] {
					seen[hp] = true
					eps = append(eps, hp)
				}
			}
		}
	}
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].host != eps[j].host {
			return eps[i].host < eps[j].host
		}
		return eps[i].port < eps[j].port
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if len(eps) == 0 {
		return cla
	}
	lbs := make([]*endpointv3.LbEndpoint, 0, len(eps))
	for _, hp := range eps {
		lbs = append(lbs, lbEndpoint(hp.host, hp.port))
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return cla
}

// slicePort finds the slice port carrying the Service port's name (empty
// for a single unnamed port).
func slicePort(s *discoveryv1.EndpointSlice, name string) (uint32, bool) {
	for _, p := range s.Ports {
		pn := ""
		if p.Name != nil {
			pn = *p.Name
		}
		if pn == name && p.Port != nil {
			return uint32(*p.Port), true
		}
	}
	return 0, false
}
