package translator

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// fakeLookup serves every revision Service on port 80 (http).
type fakeLookup struct{ secrets map[string]*corev1.Secret }

func (fakeLookup) Service(ns, name string) (*corev1.Service, bool) {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8012)}}},
	}, true
}

func (f fakeLookup) Secret(ns, name string) (*corev1.Secret, bool) {
	s, ok := f.secrets[ns+"/"+name]
	return s, ok
}

// knativeIngress is what Serving generates for Service name in ns with one
// revision: a ClusterLocal rule and an ExternalIP rule on extHost.
func knativeIngress(ns, name, extHost string, created time.Time) *v1alpha1.Ingress {
	rev := name + "-00001"
	paths := []v1alpha1.HTTPIngressPath{{Splits: []v1alpha1.IngressBackendSplit{{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: rev, ServicePort: intstr.FromInt(80)},
		Percent:        100,
		AppendHeaders:  map[string]string{"Knative-Serving-Revision": rev, "Knative-Serving-Namespace": ns},
	}}}}
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(created)},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts:      []string{name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"},
			Visibility: v1alpha1.IngressVisibilityClusterLocal,
			HTTP:       &v1alpha1.HTTPIngressRuleValue{Paths: paths},
		}, {
			Hosts:      []string{extHost},
			Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP:       &v1alpha1.HTTPIngressRuleValue{Paths: paths},
		}}},
	}
}

var t0 = time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)

// servedHosts lists the hosts with a scope on external HTTP whose route
// configuration has a virtual host for them.
func servedHosts(o *Output) map[string]bool {
	hosts := map[string]bool{}
	for _, sc := range o.Scopes {
		host, ok := strings.CutPrefix(sc.Name, ExternalHTTP+"/")
		if !ok {
			continue
		}
		for _, rc := range o.Routes {
			if rc.Name != sc.RouteConfigurationName {
				continue
			}
			for _, vh := range rc.VirtualHosts {
				if slices.Contains(vh.Domains, host) {
					hosts[host] = true
				}
			}
		}
	}
	return hosts
}

// scopeRoutes is the route configuration the scope name points at.
func scopeRoutes(o *Output, name string) string {
	for _, sc := range o.Scopes {
		if sc.Name == name {
			return sc.RouteConfigurationName
		}
	}
	return ""
}

func TestTableConflictIndependentOfOrder(t *testing.T) {
	cfg := DefaultConfig()
	// Three claim shared.example.com; b (oldest) must win. d shares a
	// host only with c, a loser: d must be served.
	ings := []*v1alpha1.Ingress{
		knativeIngress("ns", "a", "shared.example.com", t0.Add(2*time.Hour)),
		knativeIngress("ns", "b", "shared.example.com", t0),
		knativeIngress("ns", "c", "shared.example.com", t0.Add(time.Hour)),
		knativeIngress("ns", "e", "alone.example.com", t0.Add(3*time.Hour)),
	}
	c2 := knativeIngress("ns", "c", "shared.example.com", t0.Add(time.Hour))
	c2.Spec.Rules[1].Hosts = append(c2.Spec.Rules[1].Hosts, "c-and-d.example.com")
	ings[2] = c2
	ings = append(ings, knativeIngress("ns", "d", "c-and-d.example.com", t0.Add(4*time.Hour)))

	var first string
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 20; round++ {
		tab := NewTable(cfg, nil)
		for _, i := range rng.Perm(len(ings)) {
			tab.Set(Translate(ings[i], fakeLookup{}, &cfg))
		}
		out := tab.Build()
		var b strings.Builder
		for _, k := range []string{"ns/a", "ns/b", "ns/c", "ns/d", "ns/e"} {
			fmt.Fprintf(&b, "%s=%v\n", k, tab.Status(k))
		}
		got := b.String()
		if round == 0 {
			first = got
			want := "ns/a=HostConflict: host \"shared.example.com\" is already served by ingress ns/b\n" +
				"ns/b=<nil>\n" +
				"ns/c=HostConflict: host \"shared.example.com\" is already served by ingress ns/b\n" +
				"ns/d=<nil>\nns/e=<nil>\n"
			if got != want {
				t.Fatalf("statuses:\n%s\nwant:\n%s", got, want)
			}
			hosts := servedHosts(out)
			if !hosts["shared.example.com"] || !hosts["c-and-d.example.com"] || !hosts["alone.example.com"] || len(hosts) != 3 {
				t.Fatalf("served hosts %v", hosts)
			}
			// The winner's route, not a loser's.
			for _, kind := range []string{ExternalHTTP, ExternalHTTPS, InternalRoutes} {
				if rc := scopeRoutes(out, ScopeName(kind, "shared.example.com")); !strings.HasSuffix(rc, "/ns/b") {
					t.Fatalf("shared host served by %q on %s", rc, kind)
				}
			}
		} else if got != first {
			t.Fatalf("round %d: statuses depend on insertion order:\n%s\nvs\n%s", round, got, first)
		}
		res := &Result{Output: out}
		for _, c := range out.Clusters {
			res.Endpoints = append(res.Endpoints, LoadAssignment(c.Name, out.Backends[c.Name], nil))
		}
		validateAll(t, res)
	}
}

func TestTableDeleteHandsHostToNewer(t *testing.T) {
	cfg := DefaultConfig()
	tab := NewTable(cfg, nil)
	older := Translate(knativeIngress("ns", "old", "h.example.com", t0), fakeLookup{}, &cfg)
	newer := Translate(knativeIngress("ns", "new", "h.example.com", t0.Add(time.Minute)), fakeLookup{}, &cfg)
	tab.Set(newer)
	tab.Set(older)
	tab.Build()
	if tab.Status("ns/old") != nil || tab.Status("ns/new") == nil || tab.Status("ns/new").Reason != ReasonHostConflict {
		t.Fatalf("before delete: old=%v new=%v", tab.Status("ns/old"), tab.Status("ns/new"))
	}
	tab.Delete("ns/old")
	out := tab.Build()
	if err := tab.Status("ns/new"); err != nil {
		t.Fatalf("after delete the newer ingress is still rejected: %v", err)
	}
	if !servedHosts(out)["h.example.com"] {
		t.Fatal("host not served after the owner was deleted")
	}
	if len(out.Clusters) != 1 || out.Clusters[0].Name != "ns/new-00001:80" {
		t.Fatalf("clusters %v", out.Clusters)
	}
	if tab.Len() != 1 {
		t.Fatalf("Len %d", tab.Len())
	}
	// Deleting what is not there is a no-op.
	tab.Delete("ns/old")
	if tab.Build() != out {
		t.Fatal("Delete of a missing key rebuilt the output")
	}
}

func TestTableRejectedIngressFreesHosts(t *testing.T) {
	cfg := DefaultConfig()
	tab := NewTable(cfg, nil)
	// The older ingress is rejected (its Secret is missing): it must not
	// hold its hosts against the newer one.
	bad := knativeIngress("ns", "old", "h.example.com", t0)
	bad.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: []string{"h.example.com"}, SecretName: "missing", SecretNamespace: "ns"}}
	tab.Set(Translate(bad, fakeLookup{}, &cfg))
	tab.Set(Translate(knativeIngress("ns", "new", "h.example.com", t0.Add(time.Minute)), fakeLookup{}, &cfg))
	out := tab.Build()
	if e := tab.Status("ns/old"); e == nil || e.Reason != ReasonSecretNotFound {
		t.Fatalf("old: %v", e)
	}
	if e := tab.Status("ns/new"); e != nil {
		t.Fatalf("new rejected: %v", e)
	}
	if !servedHosts(out)["h.example.com"] {
		t.Fatal("host not served")
	}
	// When the older one is fixed it takes the host back.
	good := knativeIngress("ns", "old", "h.example.com", t0)
	tab.Set(Translate(good, fakeLookup{}, &cfg))
	tab.Build()
	if tab.Status("ns/old") != nil || tab.Status("ns/new") == nil {
		t.Fatalf("after fix: old=%v new=%v", tab.Status("ns/old"), tab.Status("ns/new"))
	}
}

func TestTableBuildReusesOutput(t *testing.T) {
	cfg := DefaultConfig()
	tab := NewTable(cfg, nil)
	tab.Set(Translate(knativeIngress("ns", "a", "a.example.com", t0), fakeLookup{}, &cfg))
	out1 := tab.Build()
	if out2 := tab.Build(); out2 != out1 {
		t.Fatal("Build with no change made a new output")
	}
	tab.Set(Translate(knativeIngress("ns", "b", "b.example.com", t0), fakeLookup{}, &cfg))
	out3 := tab.Build()
	if out3 == out1 {
		t.Fatal("Build after Set reused the old output")
	}
	if len(servedHosts(out3)) != 2 || len(servedHosts(out1)) != 1 {
		t.Fatalf("hosts %v then %v (the old output must not change)", servedHosts(out1), servedHosts(out3))
	}
}

// The rendered output must never carry a private key.
func TestRenderRedactsKeys(t *testing.T) {
	data, err := os.ReadFile("testdata/tls.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := ParseInput(data)
	if err != nil {
		t.Fatal(err)
	}
	res, err := TranslateInput(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Output.Secrets) != 1 || len(res.Output.Secrets[0].GetTlsCertificate().GetPrivateKey().GetInlineBytes()) == 0 {
		t.Fatal("the served secret must keep its key")
	}
	key := in.Secrets["demo/route-6d0c1a8e-4b1f-4a55-9e0e-1f1f0b5f3c11"].Data[corev1.TLSPrivateKeyKey]
	for _, format := range []string{"yaml", "json"} {
		out, err := Render(res, format)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(out, []byte(base64.StdEncoding.EncodeToString(key))) || bytes.Contains(out, []byte("PRIVATE KEY")) {
			t.Errorf("%s output carries the private key", format)
		}
		if !bytes.Contains(out, []byte("[redacted]")) {
			t.Errorf("%s output has no redaction marker", format)
		}
	}
}

func TestRedirectIs301(t *testing.T) {
	in, err := ParseInput(readFile(t, "testdata/redirect.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := TranslateInput(in)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rc := range res.Output.Routes {
		for _, vh := range rc.VirtualHosts {
			for _, r := range vh.Routes {
				if rd := r.GetRedirect(); rd != nil {
					n++
					if rc.Name != RedirectRoutes || !rd.GetHttpsRedirect() || rd.ResponseCode != routev3.RedirectAction_MOVED_PERMANENTLY {
						t.Errorf("%s/%s: redirect %v", rc.Name, vh.Name, rd)
					}
				}
			}
		}
	}
	// The external host redirects on plain HTTP only; the cluster-local
	// ones are served.
	for _, sc := range res.Output.Scopes {
		redirected := sc.RouteConfigurationName == RedirectRoutes
		if want := strings.HasPrefix(sc.Name, ExternalHTTP+"/"); redirected != want {
			t.Errorf("scope %s -> %s", sc.Name, sc.RouteConfigurationName)
		}
	}
	if n != 1 {
		t.Fatalf("%d redirects, want 1 (the shared redirect)", n)
	}
}

// Changed names exactly what the last Build took in again.
func TestTableChanged(t *testing.T) {
	data, err := os.ReadFile("testdata/canary.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := ParseInput(data)
	if err != nil {
		t.Fatal(err)
	}
	tb := NewTable(in.Config, nil)
	p := Translate(in.Ingresses[0], in, &in.Config)
	tb.Set(p)
	tb.Build()
	if got := tb.Changed(); len(got) != 1 || got[0] != p.Key() {
		t.Errorf("after Set: Changed = %v", got)
	}
	tb.Build()
	if got := tb.Changed(); len(got) != 0 {
		t.Errorf("after a Build with nothing to do: Changed = %v", got)
	}
	tb.Delete(p.Key())
	tb.Build()
	if got := tb.Changed(); len(got) != 1 || got[0] != p.Key() {
		t.Errorf("after Delete: Changed = %v", got)
	}
}
