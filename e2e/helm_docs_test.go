//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"sluice.dev/sluice/e2e/stack"
)

// TestHelmManifestUpToDate checks deploy/sluice.yaml is the chart rendered
// with the defaults but xDS in plaintext (deploy/render-manifest.sh writes
// it).
func TestHelmManifestUpToDate(t *testing.T) {
	root := helmRoot(t)
	cmd := exec.Command(filepath.Join(root, "deploy", "render-manifest.sh"), "-")
	cmd.Env = append(os.Environ(), "HELM="+helmBin(t))
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("deploy/render-manifest.sh: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(root, manifestPath))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with the chart; run deploy/render-manifest.sh", manifestPath)
	}
	// And it is a complete install: it applies (dry-run) to the stack.
	apply := newApplier(t)
	for _, o := range decodeManifest(t, string(got)) {
		if o.GetNamespace() != stack.SystemNS && o.GetNamespace() != "" {
			t.Errorf("%s/%s in namespace %q", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		if err := apply(o, true); err != nil {
			t.Errorf("server-side dry-run of %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// TestHelmValuesDocumented checks every value in values.yaml is in the
// chart's README (itself or a parent map's entry).
func TestHelmValuesDocumented(t *testing.T) {
	root := helmRoot(t)
	b, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(b, &vals); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			p := strings.TrimPrefix(prefix+"."+k, ".")
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
				walk(p, sub)
				continue
			}
			leaves = append(leaves, p)
		}
	}
	walk("", vals)
	if len(leaves) < 50 {
		t.Fatalf("only %d values found", len(leaves))
	}
	for _, l := range leaves {
		documented := false
		for p := l; p != ""; p = p[:max(strings.LastIndex(p, "."), 0)] {
			if bytes.Contains(readme, []byte("| `"+p+"` |")) {
				documented = true
				break
			}
			if !strings.Contains(p, ".") {
				break
			}
		}
		if !documented {
			t.Errorf("value %s is not in %s/README.md", l, chartDir)
		}
	}
}
