package translator

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// benchIngress is a Knative 90/10 canary for Service svc-i in namespace
// ns-(i%100): a ClusterLocal rule with the three local hosts and an
// ExternalIP rule, both splitting to two revision Services.
func benchIngress(i int, pct int) *v1alpha1.Ingress {
	ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%d", i)
	ing := knativeIngress(ns, name, fmt.Sprintf("%s.%s.example.com", name, ns), t0.Add(time.Duration(i)*time.Second))
	var splits []v1alpha1.IngressBackendSplit
	for j, p := range []int{pct, 100 - pct} {
		rev := fmt.Sprintf("%s-%05d", name, j+1)
		splits = append(splits, v1alpha1.IngressBackendSplit{
			IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: rev, ServicePort: intstr.FromInt(80)},
			Percent:        p,
			AppendHeaders:  map[string]string{"Knative-Serving-Revision": rev, "Knative-Serving-Namespace": ns},
		})
	}
	for r := range ing.Spec.Rules {
		ing.Spec.Rules[r].HTTP.Paths[0].Splits = splits
	}
	return ing
}

func outputBytes(o *Output) int {
	n := 0
	add := func(m proto.Message) { n += proto.Size(m) }
	for _, m := range o.Listeners {
		add(m)
	}
	for _, m := range o.Routes {
		add(m)
	}
	for _, m := range o.Scopes {
		add(m)
	}
	for _, m := range o.Clusters {
		add(m)
	}
	for _, m := range o.Secrets {
		add(m)
	}
	return n
}

func benchmarkTranslateAll(b *testing.B, n int) {
	cfg := DefaultConfig()
	ings := make([]*v1alpha1.Ingress, n)
	for i := range ings {
		ings[i] = benchIngress(i, 90)
	}
	b.ReportAllocs()
	var out *Output
	for b.Loop() {
		tab := NewTable(cfg, nil)
		for _, ing := range ings {
			tab.Set(Translate(ing, fakeLookup{}, &cfg))
		}
		out = tab.Build()
	}
	if len(out.Clusters) != 2*n {
		b.Fatalf("%d clusters", len(out.Clusters))
	}
	b.ReportMetric(float64(outputBytes(out)), "out-bytes")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/ingress")
}

func BenchmarkTranslateAll1k(b *testing.B)  { benchmarkTranslateAll(b, 1000) }
func BenchmarkTranslateAll10k(b *testing.B) { benchmarkTranslateAll(b, 10000) }

// BenchmarkChangeOne10k: one ingress's split moves while 10,000 are
// served; the work is Translate of that one, Table.Set and Build.
func BenchmarkChangeOne10k(b *testing.B) {
	const n = 10000
	cfg := DefaultConfig()
	tab := NewTable(cfg, nil)
	for i := 0; i < n; i++ {
		tab.Set(Translate(benchIngress(i, 90), fakeLookup{}, &cfg))
	}
	tab.Build()
	changed := []*v1alpha1.Ingress{benchIngress(n/2, 80), benchIngress(n/2, 70)}
	b.ReportAllocs()
	i := 0
	var out *Output
	for b.Loop() {
		tab.Set(Translate(changed[i%2], fakeLookup{}, &cfg))
		out = tab.Build()
		i++
	}
	if tab.Status(fmt.Sprintf("ns-%d/svc-%d", (n/2)%100, n/2)) != nil {
		b.Fatal("changed ingress not served")
	}
	b.ReportMetric(float64(outputBytes(out)), "out-bytes")
}

// BenchmarkTranslateOne is the cost of one ingress alone, the yardstick
// for BenchmarkChangeOne10k.
func BenchmarkTranslateOne(b *testing.B) {
	cfg := DefaultConfig()
	ing := benchIngress(1, 90)
	b.ReportAllocs()
	var p *Piece
	for b.Loop() {
		p = Translate(ing, fakeLookup{}, &cfg)
	}
	if p.Err != nil {
		b.Fatal(p.Err)
	}
}
