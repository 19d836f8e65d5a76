package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// Knative Serving on the stack: installed from the YAML in the
// knative.dev/serving module that go.mod pins (config/core), with the
// files that are symlinks upstream (left out of module zips) taken from
// their originals in knative.dev/networking and knative.dev/caching. Its
// images are the binaries hack/build-serving.sh builds, under names
// Serving does not resolve to digests (ko.local).
const (
	// ServingImagePrefix names Serving's own images: <prefix><component>.
	ServingImagePrefix = "ko.local/serving/"
	// ServingTestRepo is the repository of Serving's test images:
	// <repo>/<name>, as Serving's test flag --dockerrepo gives it.
	ServingTestRepo = "ko.local/serving-test"
	// ServingDomain is the domain of external Knative Service hosts.
	ServingDomain = "example.com"
)

// servingComponents are Serving's binaries; the first four are its
// Deployments, queue the sidecar of every revision pod.
var servingComponents = []string{"controller", "webhook", "activator", "autoscaler", "queue"}

// servingOriginals are where the files that are symlinks in serving's
// config/core come from: every manifest of these modules' config/ (the
// networking CRDs and config-network, caching's Image CRD).
var servingOriginals = []string{"knative.dev/networking", "knative.dev/caching"}

// ServingImages maps Serving's images (components and test images) to the
// binaries built into binDir/serving, or says what is missing.
func ServingImages(binDir string) (map[string]string, error) {
	dir := filepath.Join(binDir, "serving")
	out := map[string]string{}
	for _, c := range servingComponents {
		bin := filepath.Join(dir, c)
		if !exists(bin) {
			return nil, fmt.Errorf("%s is missing; build Knative Serving with hack/build-serving.sh", bin)
		}
		out[ServingImagePrefix+c] = bin
	}
	tests, err := os.ReadDir(filepath.Join(dir, "test-images"))
	if err != nil {
		return nil, fmt.Errorf("Serving's test images: %w; build them with hack/build-serving.sh", err)
	}
	for _, e := range tests {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out[ServingTestRepo+"/"+e.Name()] = filepath.Join(dir, "test-images", e.Name())
		}
	}
	return out, nil
}

// ModuleDir is where the go command keeps a module of the build list,
// downloaded if need be.
func ModuleDir(root, module string) (string, error) {
	list := func() (string, error) {
		cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", module)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	dir, err := list()
	if err != nil || dir == "" {
		// Not downloaded yet, or (an indirect requirement) not in go.sum.
		dl := exec.Command("go", "mod", "download", module)
		dl.Dir = root
		if b, err := dl.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go mod download %s: %v: %s", module, err, b)
		}
		if dir, err = list(); err != nil || dir == "" {
			return "", fmt.Errorf("go list -m %s: %v", module, err)
		}
	}
	return dir, nil
}

// servingManifests reads Serving's config/core in file order, the
// symlinked files from their originals, with our image names.
func servingManifests(root string) ([]*unstructured.Unstructured, error) {
	dir, err := ModuleDir(root, "knative.dev/serving")
	if err != nil {
		return nil, err
	}
	core := filepath.Join(dir, "config", "core")
	files := map[string]string{} // relative name -> file to read
	err = filepath.WalkDir(core, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		rel, _ := filepath.Rel(core, p)
		files[rel] = p
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, mod := range servingOriginals {
		mdir, err := ModuleDir(root, mod)
		if err != nil {
			return nil, err
		}
		yamls, err := filepath.Glob(filepath.Join(mdir, "config", "*.yaml"))
		if err != nil {
			return nil, err
		}
		for _, f := range yamls {
			files[path.Base(mod)+"/"+filepath.Base(f)] = f
		}
	}
	var out []*unstructured.Unstructured
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		b, err := os.ReadFile(files[rel])
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := dec.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", files[rel], err)
			}
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
				return nil, fmt.Errorf("%s: %w", files[rel], err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			obj.Object = renameImages(obj.Object).(map[string]any)
			out = append(out, obj)
		}
	}
	return out, nil
}

// renameImages rewrites ko://knative.dev/serving/cmd/<c> to our names
// everywhere but in ConfigMaps' _example text, whose checksum Serving's
// webhook checks.
func renameImages(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if k != "_example" {
				t[k] = renameImages(x)
			}
		}
	case []any:
		for i, x := range t {
			t[i] = renameImages(x)
		}
	case string:
		if c, ok := strings.CutPrefix(t, "ko://knative.dev/serving/cmd/"); ok {
			return ServingImagePrefix + c
		}
	}
	return v
}

// installServing applies Serving's manifests (CRDs first), selects Sluice
// and the example domain, and waits until Serving's Deployments are
// available and its webhook answers.
func (s *Stack) installServing(ctx context.Context) error {
	start := time.Now()
	objs, err := servingManifests(s.opts.Root)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(s.RESTConfig)
	if err != nil {
		return err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(s.RESTConfig)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	apply := func(obj *unstructured.Unstructured) error {
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		b, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		r := dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
		if _, err := r.Patch(ctx, obj.GetName(), types.ApplyPatchType, b, metav1.PatchOptions{FieldManager: "sluice-e2e-stack", Force: new(true)}); err != nil {
			return fmt.Errorf("applying %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		return nil
	}
	var crds, rest []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o)
		} else {
			rest = append(rest, o)
		}
	}
	for _, o := range crds {
		if err := apply(o); err != nil {
			return err
		}
	}
	for _, o := range crds {
		if err := s.waitEstablished(ctx, dyn, o.GetName()); err != nil {
			return err
		}
	}
	mapper.Reset()
	for _, o := range rest {
		if err := apply(o); err != nil {
			return err
		}
	}
	cms := s.Client.CoreV1().ConfigMaps(SystemNS)
	for name, data := range map[string]map[string]string{
		"config-network": {"ingress-class": IngressClass},
		"config-domain":  {ServingDomain: ""},
		// Serving's own CI waits this long for a revision to make progress.
		"config-deployment": {"progress-deadline": "120s"},
	} {
		b, _ := json.Marshal(map[string]any{"data": data})
		if _, err := cms.Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("configuring %s: %w", name, err)
		}
	}
	for _, d := range []string{"controller", "webhook", "activator", "autoscaler"} {
		if err := s.waitAvailable(ctx, d); err != nil {
			return err
		}
	}
	s.logf("Knative Serving installed and available in %s (from %d objects)", time.Since(start).Round(100*time.Millisecond), len(objs))
	return nil
}

func (s *Stack) waitEstablished(ctx context.Context, dyn dynamic.Interface, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}

// waitAvailable waits for a Deployment of Serving to have an available
// pod, pointing at the pod's log when it does not.
func (s *Stack) waitAvailable(ctx context.Context, name string) error {
	var last *appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := s.Client.AppsV1().Deployments(SystemNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = d
		return d.Status.AvailableReplicas >= 1 && d.Status.ObservedGeneration >= d.Generation, nil
	})
	if err != nil {
		st := "not found"
		if last != nil {
			st = fmt.Sprintf("%d of %d available", last.Status.AvailableReplicas, last.Status.Replicas)
		}
		return fmt.Errorf("Knative Serving's %s is not available (%s); see %s", name, st, s.path("logs", "pods", SystemNS+"_"+name+"-*"))
	}
	return nil
}
