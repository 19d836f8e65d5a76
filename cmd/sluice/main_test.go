package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestTranslateExample(t *testing.T) {
	code, out, errs := runCLI("translate", "-f", "../../examples/canary.yaml", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{`"route_configuration_name": "ingress/demo/hello"`, `"cluster_name": "demo/hello-00001:80"`, `"weight": 90`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}
}

// Bad input: non-zero exit, and the message names the file, the object and the field.
func TestTranslateBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata: {name: x, namespace: demo}
spec:
  rules:
  - hosts: [x.example.com]
    http:
      paths:
      - splits:
        - {serviceNamespace: demo, serviceName: missing, servicePort: 80, percent: 100}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := runCLI("translate", "-f", bad)
	if code == 0 {
		t.Fatal("a rejected ingress must give a non-zero exit")
	}
	for _, want := range []string{bad, "demo/x", "ServiceNotFound", "spec.rules[0].http.paths[0].splits[0]"} {
		if !strings.Contains(errs, want) {
			t.Errorf("error %q lacks %q", errs, want)
		}
	}
	if err := os.WriteFile(bad, []byte("kind: Ingress\nmetadata: {name: x, namespace: demo}\nspec: {rulez: []}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI("translate", "-f", bad); code == 0 || !strings.Contains(errs, "document 1") {
		t.Errorf("exit %d, error %q: want non-zero naming the document", code, errs)
	}
}

func TestBootstrapAndVersion(t *testing.T) {
	code, out, errs := runCLI("bootstrap", "--xds-address", "127.0.0.1:18000,127.0.0.1:18001", "--node-id", "pod-a")
	if code != 0 || !strings.Contains(out, "id: pod-a") || !strings.Contains(out, "DELTA_GRPC") {
		t.Errorf("bootstrap: exit %d, %s%s", code, out, errs)
	}
	if code, _, _ := runCLI("bootstrap", "--xds-address", "nonsense"); code == 0 {
		t.Error("a bad address must fail")
	}
	if code, out, _ := runCLI("version"); code != 0 || !strings.HasPrefix(out, "sluice ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, _ := runCLI("frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}
