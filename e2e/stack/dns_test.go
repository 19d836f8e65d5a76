package stack

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

func testNet(t *testing.T, objs ...any) *clusterNet {
	t.Helper()
	svcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	slices := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		var err error
		switch o.(type) {
		case *corev1.Service:
			err = svcs.Add(o)
		case *discoveryv1.EndpointSlice:
			err = slices.Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return &clusterNet{services: listersv1.NewServiceLister(svcs), slices: discoverylisters.NewEndpointSliceLister(slices)}
}

func svc(name, ip string, mod func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Spec: corev1.ServiceSpec{ClusterIP: ip,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	if mod != nil {
		mod(s)
	}
	return s
}

func slice(svcName string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	name, port := "http", int32(8080)
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svcName + "-x", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps,
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
}

func ep(ip string, ready bool, host string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	if host != "" {
		e.Hostname = &host
	}
	return e
}

// The cluster DNS answers what CoreDNS's kubernetes plugin would.
func TestClusterDNSResolve(t *testing.T) {
	cn := testNet(t,
		svc("web", "10.96.0.10", nil),
		svc("db", corev1.ClusterIPNone, nil),
		slice("db", ep("10.1.0.5", true, "db-0"), ep("10.1.0.6", false, "db-1"), ep("10.1.0.7", true, "")),
		svc("alias", "", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "web.ns.svc.cluster.local"
		}),
		svc("outside", "", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.org"
		}),
	)
	d := &clusterDNS{net: cn}
	answer := func(name string, qtype uint16) ([]string, bool) {
		rrs, found := d.resolve(name, qtype, 0)
		var out []string
		for _, rr := range rrs {
			switch r := rr.(type) {
			case *dns.A:
				out = append(out, r.A.String())
			case *dns.CNAME:
				out = append(out, "CNAME "+r.Target)
			}
		}
		return out, found
	}
	for _, c := range []struct {
		name  string
		qtype uint16
		want  []string
		found bool
	}{
		{"web.ns.svc.cluster.local.", dns.TypeA, []string{"10.96.0.10"}, true},
		{"web.ns.svc.cluster.local.", dns.TypeAAAA, nil, true}, // exists, no IPv6
		{"db.ns.svc.cluster.local.", dns.TypeA, []string{"10.1.0.5", "10.1.0.7"}, true},
		{"db-0.db.ns.svc.cluster.local.", dns.TypeA, []string{"10.1.0.5"}, true},
		{"db-1.db.ns.svc.cluster.local.", dns.TypeA, nil, false}, // not ready
		{"alias.ns.svc.cluster.local.", dns.TypeA, []string{"CNAME web.ns.svc.cluster.local.", "10.96.0.10"}, true},
		{"outside.ns.svc.cluster.local.", dns.TypeA, []string{"CNAME example.org."}, true}, // never followed out
		{"10-1-0-9.ns.pod.cluster.local.", dns.TypeA, []string{"10.1.0.9"}, true},
		{"nosuch.ns.svc.cluster.local.", dns.TypeA, nil, false},
		{"web.ns.svc.cluster.local.ns.svc.cluster.local.", dns.TypeA, nil, false}, // a search-path miss
		{"example.org.", dns.TypeA, nil, false},
	} {
		got, found := answer(c.name, c.qtype)
		if !slices.Equal(got, c.want) || found != c.found {
			t.Errorf("%s %s: %v found=%v, want %v found=%v", c.name, dns.TypeToString[c.qtype], got, found, c.want, c.found)
		}
	}
	// The proxy's targets: ready endpoints on the named port.
	if got := cn.targets("ns", "db", corev1.ServicePort{Name: "http", Port: 80}); !slices.Equal(got, []string{"10.1.0.5:8080", "10.1.0.7:8080"}) {
		t.Errorf("targets of db: %v", got)
	}
	if got := cn.targets("ns", "db", corev1.ServicePort{Name: "metrics", Port: 9090}); len(got) != 0 {
		t.Errorf("targets of db's unknown port: %v", got)
	}
}
