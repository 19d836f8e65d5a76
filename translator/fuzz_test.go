package translator

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

var (
	fuzzOnce  sync.Once
	fuzzWorld *Input   // Services, Secrets and slices of every golden input
	fuzzSeeds [][]byte // their ingress specs as JSON
)

func loadFuzzWorld(tb testing.TB) {
	fuzzOnce.Do(func() {
		fuzzWorld = &Input{Services: map[string]*corev1.Service{}, Secrets: map[string]*corev1.Secret{}, Config: DefaultConfig()}
		fuzzWorld.Config.LocalGatewayDomains = []string{"sluice-internal.sluice-system.svc.cluster.local"}
		fuzzWorld.Services["demo/healthy-00001"], _ = fakeLookup{}.Service("demo", "healthy-00001")
		files, _ := filepath.Glob("testdata/*.in.yaml")
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			in, err := ParseInput(data)
			if err != nil {
				continue
			}
			for k, v := range in.Services {
				fuzzWorld.Services[k] = v
			}
			for k, v := range in.Secrets {
				fuzzWorld.Secrets[k] = v
			}
			fuzzWorld.Slices = append(fuzzWorld.Slices, in.Slices...)
			for _, ing := range in.Ingresses {
				b, err := json.Marshal(ing.Spec)
				if err == nil {
					fuzzSeeds = append(fuzzSeeds, b)
				}
			}
		}
	})
	if len(fuzzSeeds) == 0 {
		tb.Fatal("no golden inputs to seed from")
	}
}

// FuzzTranslate feeds arbitrary ingress specs (JSON, in namespace demo)
// through Translate and a Table already serving a healthy ingress. It must
// never panic, and either reject the ingress with a reason or produce
// resources that pass validateAll; the healthy ingress must stay served
// unless the fuzzed one is older and takes its hosts.
func FuzzTranslate(f *testing.F) {
	loadFuzzWorld(f)
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	for _, s := range []string{
		`{"rules":[{"hosts":["a"],"http":null}]}`,
		`{"rules":[{"hosts":[""],"http":{"paths":[{"splits":[{"serviceNamespace":"demo","serviceName":"hello-00001","servicePort":80}]}]}}]}`,
		`{"tls":[{"secretName":"route-6d0c1a8e-4b1f-4a55-9e0e-1f1f0b5f3c11","secretNamespace":"demo"}],"rules":[{"hosts":["a.b"],"http":{"paths":[{"splits":[{"serviceNamespace":"demo","serviceName":"hello-00001","servicePort":"http"}]}]}}]}`,
		`{"rules":[{"hosts":["x.y"],"http":{"paths":[{"path":"/%","appendHeaders":{"a":"%REQ(x)%"},"headers":{"K-Network-Hash":{"exact":"override"}},"splits":[{"serviceNamespace":"demo","serviceName":"hello","servicePort":80}]}]}}]}`,
	} {
		f.Add([]byte(s))
	}
	cfg := fuzzWorld.Config
	healthy := Translate(knativeIngress("demo", "healthy", "healthy.demo.example.com", t0.Add(time.Hour)), fuzzWorld, &cfg)
	if healthy.Err != nil {
		f.Fatal(healthy.Err)
	}
	def, err := DefaultSecret(&cfg, fuzzWorld)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var spec v1alpha1.IngressSpec
		if json.Unmarshal(data, &spec) != nil {
			return
		}
		ing := &v1alpha1.Ingress{
			ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "fuzz", Generation: 1, CreationTimestamp: metav1.NewTime(t0)},
			Spec:       spec,
		}
		tab := NewTable(cfg, def)
		tab.Set(healthy)
		p := Translate(ing, fuzzWorld, &cfg)
		tab.Set(p)
		out := tab.Build()
		if e := tab.Status("demo/fuzz"); e != nil {
			if e.Reason == "" || e.Message == "" {
				t.Fatalf("rejected without a reason: %#v", e)
			}
		} else if p.Hash == "" {
			t.Fatal("served ingress without a hash")
		}
		if e := tab.Status("demo/healthy"); e != nil && e.Reason != ReasonHostConflict {
			t.Fatalf("healthy ingress broken by another: %v", e)
		}
		res := &Result{Output: out}
		for _, c := range out.Clusters {
			if b := out.Backends[c.Name]; !b.External {
				res.Endpoints = append(res.Endpoints, LoadAssignment(c.Name, b, fuzzWorld.Slices))
			}
		}
		if errs := checkResult(res); len(errs) > 0 {
			t.Fatalf("spec %s\nserved with invalid resources: %v", data, errs)
		}
		if _, err := Render(res, "json"); err != nil {
			t.Fatalf("render: %v", err)
		}
	})
}

// FuzzTranslateInput feeds whole YAML inputs (seeded with the goldens):
// ParseInput and TranslateInput never panic, and whatever they accept
// renders into resources that pass validateAll.
func FuzzTranslateInput(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.in.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := ParseInput(data)
		if err != nil {
			return
		}
		res, err := TranslateInput(in)
		if err != nil {
			return
		}
		for _, r := range res.Ingresses {
			if !r.Ready && (r.Reason == "" || r.Message == "") {
				t.Fatalf("%s rejected without a reason", r.Name)
			}
		}
		if errs := checkResult(res); len(errs) > 0 {
			t.Fatalf("invalid resources: %v", errs)
		}
		if _, err := Render(res, "yaml"); err != nil {
			t.Fatalf("render: %v", err)
		}
	})
}
