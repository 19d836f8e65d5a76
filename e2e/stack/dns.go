package stack

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// clusterDomain is the cluster's DNS domain, as Knative assumes.
const clusterDomain = "cluster.local."

// dnsTTL is short: Services come and go within a test.
const dnsTTL = 5

// clusterDNS answers the cluster's names for the pods, from the Services
// and EndpointSlices, as CoreDNS's kubernetes plugin does:
//
//	<svc>.<ns>.svc.cluster.local            A: the cluster IP; headless: the
//	                                        ready endpoints; ExternalName: a
//	                                        CNAME (followed when in-cluster)
//	<host>.<svc>.<ns>.svc.cluster.local     A: that endpoint of a headless Service
//	<a-b-c-d>.<ns>.pod.cluster.local        A: a.b.c.d
//
// Anything else is NXDOMAIN: no query ever leaves the machine.
type clusterDNS struct {
	net     *clusterNet
	servers []*dns.Server
}

func startClusterDNS(cn *clusterNet, addr string) (*clusterDNS, error) {
	d := &clusterDNS{net: cn}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", d.serve)
	for _, proto := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: addr, Net: proto, Handler: mux}
		started := make(chan error, 1)
		srv.NotifyStartedFunc = func() { started <- nil }
		go func() {
			if err := srv.ListenAndServe(); err != nil {
				started <- err
			}
		}()
		if err := <-started; err != nil {
			d.stop()
			return nil, fmt.Errorf("cluster DNS on %s/%s: %w", addr, proto, err)
		}
		d.servers = append(d.servers, srv)
	}
	return d, nil
}

func (d *clusterDNS) stop() {
	for _, s := range d.servers {
		_ = s.ShutdownContext(context.Background())
	}
}

func (d *clusterDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		rrs, found := d.resolve(strings.ToLower(q.Name), q.Qtype, 0)
		m.Answer = rrs
		if !found {
			m.Rcode = dns.RcodeNameError
		}
	}
	_ = w.WriteMsg(m)
}

// resolve answers name for qtype; found is false for a name that does not
// exist (NXDOMAIN), true with no records for one without that type.
func (d *clusterDNS) resolve(name string, qtype uint16, depth int) (rrs []dns.RR, found bool) {
	if depth > 4 || !strings.HasSuffix(name, "."+clusterDomain) {
		return nil, false
	}
	labels := strings.Split(strings.TrimSuffix(name, "."+clusterDomain), ".")
	switch {
	case len(labels) == 3 && labels[2] == "pod":
		ip := net.ParseIP(strings.ReplaceAll(labels[0], "-", "."))
		if ip == nil || ip.To4() == nil {
			return nil, false
		}
		return aRecords(name, qtype, []string{ip.String()}), true
	case len(labels) == 3 && labels[2] == "svc":
		svc, err := d.net.services.Services(labels[1]).Get(labels[0])
		if err != nil {
			return nil, false
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			target := dns.Fqdn(strings.ToLower(svc.Spec.ExternalName))
			rrs = []dns.RR{&dns.CNAME{Hdr: header(name, dns.TypeCNAME), Target: target}}
			if qtype != dns.TypeCNAME {
				more, _ := d.resolve(target, qtype, depth+1)
				rrs = append(rrs, more...)
			}
			return rrs, true
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone && svc.Spec.ClusterIP != "" {
			return aRecords(name, qtype, []string{svc.Spec.ClusterIP}), true
		}
		var ips []string
		for _, ep := range d.net.endpoints(svc.Namespace, svc.Name) {
			ips = append(ips, ep.Addresses...)
		}
		return aRecords(name, qtype, ips), true
	case len(labels) == 4 && labels[3] == "svc":
		for _, ep := range d.net.endpoints(labels[2], labels[1]) {
			if ep.Hostname != nil && *ep.Hostname == labels[0] {
				return aRecords(name, qtype, ep.Addresses), true
			}
		}
	}
	return nil, false
}

func header(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: dnsTTL}
}

// aRecords gives the IPv4 addresses as A records when A (or ANY) is asked.
func aRecords(name string, qtype uint16, ips []string) []dns.RR {
	if qtype != dns.TypeA && qtype != dns.TypeANY {
		return nil
	}
	var out []dns.RR
	for _, s := range ips {
		if ip := net.ParseIP(s).To4(); ip != nil {
			out = append(out, &dns.A{Hdr: header(name, dns.TypeA), A: ip})
		}
	}
	return out
}

// endpoints lists the ready endpoints of a Service from its EndpointSlices.
func (cn *clusterNet) endpoints(ns, svc string) []discoveryv1.Endpoint {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc})
	slices, err := cn.slices.EndpointSlices(ns).List(sel)
	if err != nil {
		return nil
	}
	var out []discoveryv1.Endpoint
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				out = append(out, ep)
			}
		}
	}
	return out
}
