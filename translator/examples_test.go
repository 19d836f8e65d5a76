package translator

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExamples keeps examples/ runnable: each file parses, every ingress
// in it is served, and the resources pass validateAll.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) < 6 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, err := ParseInput(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(in.Ingresses) == 0 {
				t.Fatal("no ingress")
			}
			res, err := TranslateInput(in)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res.Ingresses {
				if !r.Ready {
					t.Errorf("%s rejected: %s: %s", r.Name, r.Reason, r.Message)
				}
			}
			validateAll(t, res)
			if len(res.Endpoints) == 0 {
				t.Error("no endpoints: an example should show where traffic goes")
			}
		})
	}
}
