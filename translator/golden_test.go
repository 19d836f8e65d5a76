package translator

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current translator")

// TestGolden translates every testdata/<case>.in.yaml and compares the
// output with testdata/<case>/<part>.yaml, one file per resource type
// (listeners, routes, scopes, clusters, endpoints, secrets) and one for
// the ingresses' outcomes, so a change shows in the part it changes; an
// empty part has no file. Run with -update to regenerate. An input that
// must be refused has a <case>.err.txt golden with the error instead.
func TestGolden(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, inFile := range ins {
		name := strings.TrimSuffix(filepath.Base(inFile), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(inFile)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]byte{}
			in, err := ParseInput(data)
			if err == nil {
				var res *Result
				if res, err = TranslateInput(in); err == nil {
					validateAll(t, res)
					if got, err = renderParts(res); err != nil {
						t.Fatal(err)
					}
				}
			}
			dir := filepath.Join("testdata", name)
			errFile := filepath.Join("testdata", name+".err.txt")
			if err != nil {
				got = map[string][]byte{errFile: []byte(err.Error() + "\n")}
			} else {
				files := map[string][]byte{}
				for part, b := range got {
					files[filepath.Join(dir, part+".yaml")] = b
				}
				got = files
			}
			if *update {
				_ = os.RemoveAll(dir)
				_ = os.Remove(errFile)
				for file, b := range got {
					if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(file, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return
			}
			want := map[string][]byte{}
			files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
			if _, err := os.Stat(errFile); err == nil {
				files = append(files, errFile)
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				want[f] = b
			}
			for file := range want {
				if _, ok := got[file]; !ok {
					t.Errorf("%s: the translator gives nothing for it now (run go test ./translator -update if intended)", file)
				}
			}
			for file, b := range got {
				w, ok := want[file]
				if !ok {
					t.Errorf("%s is missing (got error %v; run go test ./translator -update)", file, err)
					continue
				}
				if d := cmp.Diff(string(w), string(b)); d != "" {
					t.Errorf("%s differs (-want +got; run go test ./translator -update if intended):\n%s", file, d)
				}
			}
		})
	}
}

// renderParts is Render's YAML split by top-level key, empty parts left out.
func renderParts(res *Result) (map[string][]byte, error) {
	js, err := Render(res, "json")
	if err != nil {
		return nil, err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for part, raw := range doc {
		if s := string(raw); s == "[]" || s == "null" || s == "{}" {
			continue
		}
		if out[part], err = yaml.JSONToYAML(raw); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type validator interface{ ValidateAll() error }

// validateAll checks every emitted resource with the protos' own rules,
// including messages packed in Any fields, and with the rules Envoy
// enforces when loading them (see envoyRules).
func validateAll(t testing.TB, res *Result) {
	t.Helper()
	for _, err := range checkResult(res) {
		t.Error(err)
	}
}
