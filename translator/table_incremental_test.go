package translator

import (
	"fmt"
	"math/rand"
	"os"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// TestTableIncrementalMatchesFresh drives one Table through random Sets
// and Deletes (shared hosts, shared revision Services, TLS, broken
// ingresses) and checks after every Build that its output and statuses
// equal those of a Table built from scratch with the same pieces.
func TestTableIncrementalMatchesFresh(t *testing.T) {
	data := readFile(t, "testdata/tls.in.yaml")
	in, err := ParseInput(data)
	if err != nil {
		t.Fatal(err)
	}
	lookup := fakeLookup{secrets: map[string]*corev1.Secret{}}
	for _, s := range in.Secrets {
		c := s.DeepCopy()
		c.Namespace = "ns"
		lookup.secrets["ns/"+c.Name] = c
	}
	secretName := ""
	for _, s := range lookup.secrets {
		secretName = s.Name
	}
	cfg := DefaultConfig()
	def, err := secretResource(lookup.secrets["ns/"+secretName])
	if err != nil {
		t.Fatal(err)
	}
	def.Name = "sluice-system/default"

	rng := rand.New(rand.NewSource(7))
	hosts := []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com"}
	gen := func() *v1alpha1.Ingress {
		name := fmt.Sprintf("i%d", rng.Intn(8))
		ing := knativeIngress("ns", name, hosts[rng.Intn(len(hosts))], t0.Add(time.Duration(rng.Intn(5))*time.Minute))
		// Share revision Services between ingresses now and then.
		if rng.Intn(2) == 0 {
			for r := range ing.Spec.Rules {
				ing.Spec.Rules[r].HTTP.Paths[0].Splits[0].ServiceName = fmt.Sprintf("shared-%d", rng.Intn(2))
			}
		}
		switch rng.Intn(5) {
		case 0:
			ing.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: ing.Spec.Rules[1].Hosts, SecretName: secretName, SecretNamespace: "ns"}}
		case 1:
			ing.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: ing.Spec.Rules[1].Hosts, SecretName: "missing", SecretNamespace: "ns"}}
		case 2:
			ing.Spec.Rules[1].Hosts = append(ing.Spec.Rules[1].Hosts, hosts[rng.Intn(len(hosts))])
		}
		return ing
	}
	for _, withDefault := range []bool{false, true} {
		var d = def
		if !withDefault {
			d = nil
		}
		inc := NewTable(cfg, d)
		copyOf := edited{}
		for step := 0; step < 400; step++ {
			if rng.Intn(4) == 0 && inc.Len() > 0 {
				keys := inc.Keys()
				inc.Delete(keys[rng.Intn(len(keys))])
			} else {
				for n := rng.Intn(3) + 1; n > 0; n-- {
					inc.Set(Translate(gen(), lookup, &cfg))
				}
			}
			if rng.Intn(3) == 0 {
				continue // several changes in one Build
			}
			got := inc.Build()
			fresh := NewTable(cfg, d)
			keys := append([]string(nil), inc.Keys()...)
			rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			for _, k := range keys {
				p, _ := inc.Get(k)
				fresh.Set(p)
			}
			want := fresh.Build()
			if diff := outputDiff(got, want); diff != "" {
				t.Fatalf("step %d: incremental build differs from a fresh one: %s", step, diff)
			}
			// A copy kept up to date with Edits alone stays equal.
			copyOf.apply(got)
			if diff := copyOf.diff(got); diff != "" {
				t.Fatalf("step %d: a copy following Edits differs: %s", step, diff)
			}
			for _, k := range keys {
				if a, b := fmt.Sprint(inc.Status(k)), fmt.Sprint(fresh.Status(k)); a != b {
					t.Fatalf("step %d: %s status %s, fresh %s", step, k, a, b)
				}
			}
			res := &Result{Output: got}
			for _, c := range got.Clusters {
				res.Endpoints = append(res.Endpoints, LoadAssignment(c.Name, got.Backends[c.Name], nil))
			}
			validateAll(t, res)
		}
	}
}

func outputDiff(a, b *Output) string {
	type group struct {
		name string
		x, y []proto.Message
	}
	for _, g := range []group{
		{"listeners", asMessages(a.Listeners), asMessages(b.Listeners)},
		{"routes", asMessages(a.Routes), asMessages(b.Routes)},
		{"scopes", asMessages(a.Scopes), asMessages(b.Scopes)},
		{"clusters", asMessages(a.Clusters), asMessages(b.Clusters)},
		{"secrets", asMessages(a.Secrets), asMessages(b.Secrets)},
	} {
		if len(g.x) != len(g.y) {
			return fmt.Sprintf("%s: %d vs %d", g.name, len(g.x), len(g.y))
		}
		for i := range g.x {
			if !proto.Equal(g.x[i], g.y[i]) {
				return fmt.Sprintf("%s[%d]:\n%v\nvs\n%v", g.name, i, g.x[i], g.y[i])
			}
		}
	}
	if len(a.Backends) != len(b.Backends) {
		return fmt.Sprintf("backends: %d vs %d", len(a.Backends), len(b.Backends))
	}
	for k, v := range a.Backends {
		if b.Backends[k] != v {
			return fmt.Sprintf("backend %s: %v vs %v", k, v, b.Backends[k])
		}
	}
	return ""
}

// edited is what a consumer keeps by applying each Build's Edits.
type edited struct{ routes, scopes, clusters map[string]proto.Message }

func (e *edited) apply(o *Output) {
	index := func(msgs []proto.Message, name func(proto.Message) string) map[string]proto.Message {
		out := map[string]proto.Message{}
		for _, m := range msgs {
			out[name(m)] = m
		}
		return out
	}
	routes := index(asMessages(o.Routes), func(m proto.Message) string { return m.(*routev3.RouteConfiguration).Name })
	scopes := index(asMessages(o.Scopes), func(m proto.Message) string { return m.(*routev3.ScopedRouteConfiguration).Name })
	clusters := index(asMessages(o.Clusters), func(m proto.Message) string { return m.(*clusterv3.Cluster).Name })
	if o.Edits.All {
		e.routes, e.scopes, e.clusters = routes, scopes, clusters
		return
	}
	for _, g := range []struct {
		have  map[string]proto.Message
		now   map[string]proto.Message
		names []string
	}{{e.routes, routes, o.Edits.Routes}, {e.scopes, scopes, o.Edits.Scopes}, {e.clusters, clusters, o.Edits.Clusters}} {
		for _, n := range g.names {
			if m, ok := g.now[n]; ok {
				g.have[n] = m
			} else {
				delete(g.have, n)
			}
		}
	}
}

func (e *edited) diff(o *Output) string {
	for _, g := range []struct {
		kind string
		have map[string]proto.Message
		want []proto.Message
	}{{"routes", e.routes, asMessages(o.Routes)}, {"scopes", e.scopes, asMessages(o.Scopes)}, {"clusters", e.clusters, asMessages(o.Clusters)}} {
		if len(g.have) != len(g.want) {
			return fmt.Sprintf("%s: %d vs %d", g.kind, len(g.have), len(g.want))
		}
		for _, m := range g.want {
			var name string
			switch v := m.(type) {
			case *routev3.RouteConfiguration:
				name = v.Name
			case *routev3.ScopedRouteConfiguration:
				name = v.Name
			case *clusterv3.Cluster:
				name = v.Name
			}
			if !proto.Equal(g.have[name], m) {
				return fmt.Sprintf("%s %s differs", g.kind, name)
			}
		}
	}
	return ""
}

func TestPatchSorted(t *testing.T) {
	name := func(s string) string { return s }
	rng := rand.New(rand.NewSource(3))
	for round := 0; round < 2000; round++ {
		set := map[string]bool{}
		for i := rng.Intn(12); i > 0; i-- {
			set[fmt.Sprintf("k%02d", rng.Intn(30))] = true
		}
		var list []string
		for k := range set {
			list = append(list, k)
		}
		sortStrings(list)
		old := append([]string(nil), list...)
		edits := map[string]string{}
		for i := rng.Intn(6); i > 0; i-- {
			k := fmt.Sprintf("k%02d", rng.Intn(30))
			if rng.Intn(2) == 0 {
				edits[k] = ""
				delete(set, k)
			} else {
				edits[k] = k
				set[k] = true
			}
		}
		got := patchSorted(list, edits, name)
		var want []string
		for k := range set {
			want = append(want, k)
		}
		sortStrings(want)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("patch %v with %v = %v, want %v", old, edits, got, want)
		}
		if fmt.Sprint(list) != fmt.Sprint(old) {
			t.Fatalf("patch modified its input: %v -> %v", old, list)
		}
	}
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
