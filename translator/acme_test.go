package translator

import (
	"os"
	"slices"
	"testing"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// RouteNames says which route configurations Translate makes, and
// RoutesOwner maps each back to its ingress (NACK isolation relies on it):
// two under Redirected with a challenge path, one otherwise.
func TestRouteNamesMatchTranslate(t *testing.T) {
	data, err := os.ReadFile("testdata/acme-redirect.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := ParseInput(data)
	if err != nil {
		t.Fatal(err)
	}
	ing := in.Ingresses[0]
	for _, c := range []struct {
		name   string
		change func(*v1alpha1.Ingress)
		want   []string
	}{
		{"redirected with a challenge", func(*v1alpha1.Ingress) {}, []string{"ingress/demo/hello", "ingress-http/demo/hello"}},
		{"not redirected", func(i *v1alpha1.Ingress) { i.Spec.HTTPOption = v1alpha1.HTTPOptionEnabled }, []string{"ingress/demo/hello"}},
		{"challenge on a cluster-local rule only", func(i *v1alpha1.Ingress) { i.Spec.Rules[1].Visibility = v1alpha1.IngressVisibilityClusterLocal },
			[]string{"ingress/demo/hello"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ing := ing.DeepCopy()
			c.change(ing)
			p := Translate(ing, in, &in.Config)
			if p.Err != nil {
				t.Fatal(p.Err)
			}
			var made []string
			for _, r := range p.Routes {
				made = append(made, r.Name)
				if key, ok := RoutesOwner(r.Name); !ok || key != "demo/hello" {
					t.Errorf("RoutesOwner(%q) = %q, %v", r.Name, key, ok)
				}
			}
			if got := RouteNames(ing); !slices.Equal(got, c.want) || !slices.Equal(made, c.want) {
				t.Errorf("RouteNames %v, Translate made %v, want %v", got, made, c.want)
			}
		})
	}
	for _, name := range []string{RedirectRoutes, "ingress-http/demo", "ingress-http/a/b/c", "ingress-https/a/b"} {
		if key, ok := RoutesOwner(name); ok {
			t.Errorf("RoutesOwner(%q) = %q, want none", name, key)
		}
	}
}
