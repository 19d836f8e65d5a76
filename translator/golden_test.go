package translator

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current translator")

// TestGolden translates every testdata/*.in.yaml and compares with the
// matching *.out.yaml (run with -update to regenerate). A file whose input
// must be refused has a *.err.txt golden with the error instead.
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
			var got []byte
			goldenFile := strings.TrimSuffix(inFile, ".in.yaml") + ".out.yaml"
			in, err := ParseInput(data)
			if err == nil {
				var res *Result
				if res, err = TranslateInput(in); err == nil {
					validateAll(t, res)
					got, err = Render(res, "yaml")
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			if err != nil {
				goldenFile = strings.TrimSuffix(inFile, ".in.yaml") + ".err.txt"
				got = []byte(err.Error() + "\n")
			}
			if *update {
				if err := os.WriteFile(goldenFile, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, rerr := os.ReadFile(goldenFile)
			if rerr != nil {
				t.Fatalf("%v (got error %v; run go test ./translator -update)", rerr, err)
			}
			if d := cmp.Diff(string(want), string(got)); d != "" {
				t.Errorf("%s differs (-want +got; run go test ./translator -update if intended):\n%s", goldenFile, d)
			}
		})
	}
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
