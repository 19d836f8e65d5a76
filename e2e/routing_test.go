//go:build e2e

package e2e

import (
	"net/http"
	"testing"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

// Percent splits, measured: with 90/10 over 1000 requests the minority
// share must be within 10 ± 4 % (over 4 standard deviations apart: a
// false failure is about one in 10,000 runs).
func TestSplitPercentages(t *testing.T) {
	backend(t, "split-a", 1)
	backend(t, "split-b", 1)
	host := "split.sluice-e2e.example.com"
	createIngress(t, "split", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		ext(host, httpPath("", split("split-a", 90, nil), split("split-b", 10, nil))),
	}})
	counts := map[string]int{}
	c := client(st.External.HTTP)
	const n = 1000
	for i := 0; i < n; i++ {
		code, e, _ := do(t, c, "http://"+host+"/", nil)
		if code != http.StatusOK {
			t.Fatalf("request %d: status %d", i, code)
		}
		counts[e.Name]++
	}
	t.Logf("90/10 split over %d requests: %v", n, counts)
	if got := counts["split-b"]; got < 60 || got > 140 {
		t.Errorf("split-b got %d of %d, want 100 ± 40", got, n)
	}
	if counts["split-a"]+counts["split-b"] != n {
		t.Errorf("requests went elsewhere: %v", counts)
	}
}

// Blue/green with a 0 % tagged revision: the default host never reaches
// green; the tag host and the Knative-Serving-Tag header always do.
func TestTagsByHostAndHeader(t *testing.T) {
	backend(t, "blue", 1)
	backend(t, "green", 1)
	host, tagHost := "bg.sluice-e2e.example.com", "green-bg.sluice-e2e.example.com"
	rev := func(svc string) map[string]string {
		return map[string]string{"Knative-Serving-Revision": svc, "Knative-Serving-Namespace": ns}
	}
	tagged := httpPath("", split("green", 100, rev("green")))
	tagged.Headers = map[string]v1alpha1.HeaderMatch{"Knative-Serving-Tag": {Exact: "green"}}
	createIngress(t, "bg", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		ext(host, tagged, httpPath("", split("blue", 100, rev("blue")), split("green", 0, rev("green")))),
		ext(tagHost, httpPath("", split("green", 100, rev("green")))),
	}})
	for i := 0; i < 50; i++ {
		if _, e, _ := get(t, host, "/", nil); e.Name != "blue" {
			t.Fatalf("default host reached %q, want blue (green has 0 %%)", e.Name)
		}
	}
	if _, e, _ := get(t, tagHost, "/", nil); e.Name != "green" {
		t.Errorf("tag host reached %q, want green", e.Name)
	}
	_, e, _ := get(t, host, "/", map[string]string{"Knative-Serving-Tag": "green"})
	if e.Name != "green" {
		t.Errorf("tag header reached %q, want green", e.Name)
	}
	if got := e.Headers["Knative-Serving-Revision"]; len(got) != 1 || got[0] != "green" {
		t.Errorf("Knative-Serving-Revision = %v", got)
	}
	if _, e, _ := get(t, host, "/", map[string]string{"Knative-Serving-Tag": "nope"}); e.Name != "blue" {
		t.Errorf("unknown tag reached %q, want blue", e.Name)
	}
}

// Paths are literal prefixes, first match wins; headers must all match.
func TestPathAndHeaderDispatch(t *testing.T) {
	backend(t, "path-a", 1)
	backend(t, "path-b", 1)
	backend(t, "path-c", 1)
	host := "paths.sluice-e2e.example.com"
	withHeader := httpPath("/b", split("path-c", 100, nil))
	withHeader.Headers = map[string]v1alpha1.HeaderMatch{"X-Pick": {Exact: "c"}, "X-Also": {Exact: "yes"}}
	createIngress(t, "paths", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		ext(host, withHeader, httpPath("/b", split("path-b", 100, nil)), httpPath("", split("path-a", 100, nil))),
	}})
	for _, tc := range []struct {
		path   string
		header map[string]string
		want   string
	}{
		{"/", nil, "path-a"},
		{"/other", nil, "path-a"},
		{"/b", nil, "path-b"},
		{"/b/deeper", nil, "path-b"},
		{"/b", map[string]string{"X-Pick": "c"}, "path-b"},
		{"/b", map[string]string{"X-Pick": "c", "X-Also": "yes"}, "path-c"},
		{"/", map[string]string{"X-Pick": "c", "X-Also": "yes"}, "path-a"},
	} {
		if _, e, _ := get(t, host, tc.path, tc.header); e.Name != tc.want {
			t.Errorf("GET %s %v reached %q, want %q", tc.path, tc.header, e.Name, tc.want)
		}
	}
}

// appendHeaders before (path) and after (split) the split both overwrite
// what the client sent. On a shared name the path's value wins, as with
// net-kourier and net-istio (Envoy applies a split's headers first).
func TestAppendHeadersOverwrite(t *testing.T) {
	backend(t, "hdr", 1)
	host := "headers.sluice-e2e.example.com"
	p := httpPath("", split("hdr", 100, map[string]string{"X-Post": "post", "X-Both": "split"}))
	p.AppendHeaders = map[string]string{"X-Pre": "pre", "X-Both": "path"}
	createIngress(t, "headers", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, p)}})
	_, e, _ := get(t, host, "/", map[string]string{"X-Pre": "client", "X-Post": "client", "X-Both": "client"})
	for k, want := range map[string]string{"X-Pre": "pre", "X-Post": "post", "X-Both": "path"} {
		if got := e.Headers[k]; len(got) != 1 || got[0] != want {
			t.Errorf("header %s = %v, want [%s]", k, got, want)
		}
	}
}

// Deleting the ingress makes its host answer 404.
func TestDeletionGives404(t *testing.T) {
	backend(t, "gone", 1)
	host := "gone.sluice-e2e.example.com"
	createIngress(t, "gone", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(host, httpPath("", split("gone", 100, nil)))}})
	if code, _, _ := get(t, host, "/", nil); code != http.StatusOK {
		t.Fatalf("before deletion: %d", code)
	}
	deleteIngress(t, "gone")
	eventually(t, 10e9, "404 after deletion", func() error {
		if code, _, _ := get(t, host, "/", nil); code != http.StatusNotFound {
			return errStatus(code)
		}
		return nil
	})
}

type errStatus int

func (e errStatus) Error() string { return http.StatusText(int(e)) }

// Hosts match in any letter case and with any port, as Envoy's virtual
// hosts do, though routing picks the ingress by an exact scope key; a
// client cannot pick another ingress's scope with the key header, and the
// backend never sees it.
func TestHostCaseAndPort(t *testing.T) {
	backend(t, "case", 1)
	host := "case.sluice-e2e.example.com"
	createIngress(t, "case", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		ext(host, httpPath("", split("case", 100, nil))),
	}})
	c := client(st.External.HTTP)
	for _, h := range []string{host, "CASE.Sluice-E2E.Example.COM", host + ":80", "Case.sluice-e2e.example.com:8080"} {
		code, e, _ := do(t, c, "http://"+h+"/", nil)
		if code != http.StatusOK || e.Name != "case" {
			t.Errorf("Host %s: %d from %q, want 200 from case", h, code, e.Name)
		}
		if len(e.Headers["X-Sluice-Scope"]) != 0 {
			t.Errorf("Host %s: the backend saw the scope key %v", h, e.Headers["X-Sluice-Scope"])
		}
	}
	forged := map[string]string{"X-Sluice-Scope": "external-http/" + host}
	if code, _, _ := do(t, c, "http://unknown.sluice-e2e.example.com/", forged); code != http.StatusNotFound {
		t.Errorf("unknown host with a forged scope key: %d, want 404", code)
	}
}
