//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/e2e/workload"
)

// Ingresses with values the API server accepts but Envoy may not (hosts,
// paths, header names and values, ports, splits, huge lists), through the
// real API server, controllers and Envoys: each must end with a status,
// Ready or not Ready with a reason, and an ingress serving beside them must
// not lose one request. The seed is printed; SLUICE_E2E_FUZZ_SEED replays.
func TestFuzzThroughEnvoy(t *testing.T) {
	backend(t, "fuzz-target", 1)
	sentinel := "sentinel.sluice-e2e.example.com"
	createIngress(t, "fuzz-sentinel", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{ext(sentinel, httpPath("", split("fuzz-target", 100, nil)))}})
	p := startProber(sentinel, 2)

	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SLUICE_E2E_FUZZ_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, seed))
	ings := fastKN(t).NetworkingV1alpha1().Ingresses(ns)
	outcomes := map[string]int{}
	tried := 0
	// $SLUICE_E2E_FUZZ or 20 s (`make fuzz-e2e` gives it 10 minutes)
	for end := time.Now().Add(envDuration(t, "SLUICE_E2E_FUZZ", 20*time.Second)); time.Now().Before(end); tried++ {
		name := fmt.Sprintf("fuzz-%d", tried)
		spec, what := fuzzSpec(r, tried)
		if tried < len(extremes) { // the biggest first, every run
			spec, what = extremes[tried](tried)
		}
		_, err := ings.Create(context.Background(), workload.Ingress(ns, name, spec), metav1.CreateOptions{})
		if err != nil {
			outcomes["refused by the API server"]++
			continue
		}
		var reason string
		eventually(t, 30*time.Second, name+" ("+what+") to get a status", func() error {
			ing, err := ings.Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			c := ing.Status.GetCondition(v1alpha1.IngressConditionReady)
			if ing.Status.ObservedGeneration != ing.Generation || c == nil || c.IsUnknown() {
				return fmt.Errorf("no status yet: %+v", c)
			}
			if c.IsTrue() {
				reason = "Ready"
			} else {
				reason = "not Ready: " + c.Reason
			}
			return nil
		})
		outcomes[reason]++
		if err := ings.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ok(client(st.External.HTTP), "http://"+sentinel+"/"); err != nil {
		t.Errorf("the sentinel after the fuzzing: %v", err)
	}
	// Deleted means gone from the Envoys too, before the next test looks.
	fuzzed := regexp.MustCompile(`"ingress/sluice-e2e/fuzz-[0-9]+"`)
	eventually(t, 60*time.Second, "the fuzzed ingresses gone from the Envoys", func() error {
		for i := 0; i < 2; i++ {
			dump := getBody(t, fmt.Sprintf("http://127.0.0.1:%d/config_dump?resource=dynamic_route_configs", st.Options().Ports.EnvoyAdmin+i))
			if m := fuzzed.Find(dump); m != nil {
				return fmt.Errorf("envoy-%d still has %s", i, m)
			}
		}
		return nil
	})
	p.finish(t)
	keys := make([]string, 0, len(outcomes))
	for k := range outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s %d; ", k, outcomes[k])
	}
	t.Logf("fuzz: %d ingresses tried: %s", tried, strings.TrimSuffix(sb.String(), "; "))
	if n := outcomes["not Ready: EnvoyRejected"]; n > 0 {
		t.Logf("fuzz: %d reached Envoy and were rejected there (isolated, but the translator should have refused them)", n)
	}
	reliability(t, fmt.Sprintf("%d fuzzed ingresses through the API server and Envoy", tried), p, "every one with a status")
}

// extremes are tried first in every run: one ingress with 100,000 hosts
// (past what etcd stores in one object, so the API server refuses it), and
// the largest kinds fuzzSpec makes.
var extremes = []func(int) (v1alpha1.IngressSpec, string){
	func(i int) (v1alpha1.IngressSpec, string) { return manyHosts(i, 100000), "100,000 hosts" },
	func(i int) (v1alpha1.IngressSpec, string) { return manyHosts(i, 20000), "20,000 hosts" },
}

func manyHosts(i, n int) v1alpha1.IngressSpec {
	hosts := make([]string, n)
	for k := range hosts {
		hosts[k] = fmt.Sprintf("h%d-%d.sluice-e2e.example.com", k, i)
	}
	rule := ext(hosts[0], httpPath("", split("fuzz-target", 100, nil)))
	rule.Hosts = hosts
	return v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{rule}}
}

// nasty are values the API server takes and Envoy may choke on.
var nasty = []string{
	"", " ", "a b", "UPPER.example.com", "x.example.com:8080", "*.example.com", "*", "[::1]", "[::1]:80",
	"ünïcödé.example.com", "xn--nxasmq6b.example.com", "a..b", ".a", "a.", strings.Repeat("a", 64) + ".example.com",
	strings.Repeat("x", 300), "\x00", "a\nb", "a\r\nX-Injected: 1", "%", "%REQ(x)%", "%%", "{{", "\\", "\"", "'",
	"/", "//", "/a/../b", "/%2e%2e/", "/a?b=c", "/a#frag", "/(unclosed", "/[a-", "/.*", "/**", "/a{1,99999}",
	"no-slash", "/" + strings.Repeat("p", 5000), "\t", "é", "\u202e", "ä/ö",
}

// fuzzSpec makes the i-th ingress: a valid one with one or a few fields
// made nasty, or one huge list.
func fuzzSpec(r *rand.Rand, i int) (v1alpha1.IngressSpec, string) {
	pick := func() string { return nasty[r.IntN(len(nasty))] }
	host := fmt.Sprintf("fuzz-%d.sluice-e2e.example.com", i)
	s := split("fuzz-target", 100, nil)
	path := httpPath("", s)
	rule := ext(host, path)
	spec := v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{rule}}
	p := &spec.Rules[0].HTTP.Paths[0]
	var what string
	switch r.IntN(12) {
	case 0:
		spec.Rules[0].Hosts = append(spec.Rules[0].Hosts, pick())
		what = "host"
	case 1:
		p.Path = pick()
		what = "path"
	case 2:
		p.Headers = map[string]v1alpha1.HeaderMatch{pick(): {Exact: pick()}}
		what = "header match"
	case 3:
		p.AppendHeaders = map[string]string{pick(): pick()}
		what = "appended header"
	case 4:
		p.Splits[0].AppendHeaders = map[string]string{pick(): pick()}
		what = "split header"
	case 5:
		p.Splits[0].ServicePort = []intstr.IntOrString{intstr.FromInt(0), intstr.FromInt(65536), intstr.FromInt(-1), intstr.FromString(pick())}[r.IntN(4)]
		what = "service port"
	case 6:
		p.Splits[0].Percent = []int{-1, 0, 101, 1 << 30}[r.IntN(4)]
		p.Splits = append(p.Splits, split("fuzz-target", r.IntN(200)-50, nil))
		what = "split percents"
	case 7:
		p.Splits[0].ServiceName, p.Splits[0].ServiceNamespace = pick(), pick()
		what = "service name"
	case 8:
		p.RewriteHost = pick()
		what = "rewrite host"
	case 9:
		h := map[string]string{}
		for k := 0; k < 2000; k++ {
			h[fmt.Sprintf("X-Many-%d", k)] = strings.Repeat("v", r.IntN(100))
		}
		p.AppendHeaders = h
		what = "2,000 appended headers"
	case 10:
		spec, what = manyHosts(i, 1000+r.IntN(5000)), "thousands of hosts"
	case 11:
		spec.TLS = []v1alpha1.IngressTLS{{Hosts: []string{pick()}, SecretName: pick(), SecretNamespace: pick()}}
		what = "tls entry"
	}
	return spec, what
}
