package xdssink

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/internal/rollout"
	"sluice.dev/sluice/translator"
	"sluice.dev/sluice/xds"
)

type services struct{}

func (services) Service(ns, name string) (*corev1.Service, bool) {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, true
}
func (services) Secret(string, string) (*corev1.Secret, bool) { return nil, false }

func ingress(name, host, rev string) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts: []string{host}, Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{Splits: []v1alpha1.IngressBackendSplit{{
				IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: "ns", ServiceName: rev, ServicePort: intstr.FromInt32(80)},
				Percent:        100,
			}}}}},
		}}},
	}
}

// Publishing only what each Build changed leaves the server serving
// exactly the Build's output, as a full snapshot would.
func TestPublishFollowsEdits(t *testing.T) {
	srv := xds.New(nil, xds.Options{AckTimeout: time.Second})
	defer srv.Close()
	k := New(srv, nil)
	cfg := translator.DefaultConfig()
	table := translator.NewTable(cfg, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	for step := 0; step < 200; step++ {
		name := fmt.Sprintf("i%d", rng.IntN(6))
		if rng.IntN(4) == 0 {
			table.Delete("ns/" + name)
		} else {
			host := fmt.Sprintf("h%d.example.com", rng.IntN(8))
			table.Set(translator.Translate(ingress(name, host, fmt.Sprintf("rev-%d", rng.IntN(4))), services{}, &cfg))
		}
		out := table.Build()
		eps := map[string]*endpointv3.ClusterLoadAssignment{}
		for _, c := range out.Edits.Clusters {
			if b, ok := out.Backends[c]; ok {
				eps[c] = translator.LoadAssignment(c, b, nil)
			}
		}
		if out.Edits.All {
			for c, b := range out.Backends {
				eps[c] = translator.LoadAssignment(c, b, nil)
			}
		}
		if _, err := k.Publish(out, eps); err != nil {
			t.Fatal(err)
		}
		want := map[string]map[string]proto.Message{xds.RouteType: {}, xds.ScopeType: {}, xds.ClusterType: {}, xds.ListenerType: {}}
		for _, r := range out.Routes {
			want[xds.RouteType][r.Name] = r
		}
		for _, sc := range out.Scopes {
			want[xds.ScopeType][sc.Name] = sc
		}
		for _, c := range out.Clusters {
			want[xds.ClusterType][c.Name] = c
		}
		for _, l := range out.Listeners {
			want[xds.ListenerType][l.Name] = l
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			diff := ""
			for typeURL, ms := range want {
				for name, m := range ms {
					if got := srv.Served(typeURL, name); got != xds.Version(m) {
						diff = fmt.Sprintf("%s %s served at %q", typeURL, name, got)
					}
				}
			}
			// And nothing else: every name ever used is checked.
			for i := 0; i < 6 && diff == ""; i++ {
				n := fmt.Sprintf("i%d", i)
				for _, r := range []string{translator.IngressRoutes("ns", n)} {
					if _, ok := want[xds.RouteType][r]; !ok && srv.Served(xds.RouteType, r) != "" {
						diff = "stale route " + r
					}
				}
			}
			if diff == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d: %s", step, diff)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// This replica's rejections, and its peers' for the nodes it does not have.
func TestMergeRejections(t *testing.T) {
	ours := []xds.Rejection{{Node: "e0", TypeURL: xds.RouteType, Name: "ingress/ns/a", Version: "v2", Error: "duplicate domain"}}
	peers := []xds.Rejection{
		{Node: "e0", TypeURL: xds.RouteType, Name: "ingress/ns/a", Version: "v1", Error: "stale: e0 moved here"},
		{Node: "e1", TypeURL: xds.ScopeType, Name: "internal/a.ns", Version: "v3", Error: "bad key"},
	}
	got := mergeRejections(ours, []string{"e0"}, peers)
	want := []rollout.Rejection{
		{Node: "e0", TypeURL: xds.RouteType, Name: "ingress/ns/a", Version: "v2", Error: "duplicate domain"},
		{Node: "e1", TypeURL: xds.ScopeType, Name: "internal/a.ns", Version: "v3", Error: "bad key"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if got := mergeRejections(nil, nil, nil); len(got) != 0 {
		t.Errorf("nothing rejected: got %+v", got)
	}
}
