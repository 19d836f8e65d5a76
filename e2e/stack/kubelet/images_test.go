package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolveImage(t *testing.T) {
	images := map[string]string{
		"runtime":                   "/bin/runtime",
		"grpc-ping":                 "/bin/grpc-ping",
		"registry.local:5000/x/app": "/bin/app",
	}
	cases := []struct{ image, want string }{
		{"runtime", "/bin/runtime"},
		{"runtime:latest", "/bin/runtime"},
		{"grpc-ping", "/bin/grpc-ping"},
		{"ko://knative.dev/networking/test/test_images/runtime", "/bin/runtime"},
		{"example.test/knative.dev/networking/test/test_images/grpc-ping:v1", "/bin/grpc-ping"},
		{"example.test/runtime@sha256:0123456789abcdef", "/bin/runtime"},
		{"example.test/runtime:v2@sha256:0123456789abcdef", "/bin/runtime"},
		{"registry.local:5000/x/app:v3", "/bin/app"}, // the port is not a tag
	}
	for _, c := range cases {
		got, err := resolveImage(images, nil, c.image)
		if err != nil || got != c.want {
			t.Errorf("resolveImage(%q) = %q, %v; want %q", c.image, got, err, c.want)
		}
	}
}

func TestResolveImageUnknown(t *testing.T) {
	if _, err := resolveImage(map[string]string{"runtime": "/bin/runtime"}, nil, "timeout"); err == nil {
		t.Error("unknown image resolved")
	}
	if _, err := resolveImage(nil, nil, ""); err == nil {
		t.Error("empty image resolved")
	}
	if _, err := resolveImage(nil, nil, "runtimex"); err == nil {
		t.Error("prefix of nothing resolved")
	}
}

func TestResolveImageHook(t *testing.T) {
	var asked []string
	hook := func(image string) (string, error) {
		asked = append(asked, image)
		switch image {
		case "special:1":
			return "/opt/special", nil
		case "broken":
			return "", errors.New("no")
		}
		return "", nil
	}
	images := map[string]string{"runtime": "/bin/runtime"}
	if got, err := resolveImage(images, hook, "special:1"); err != nil || got != "/opt/special" {
		t.Errorf("hook image = %q, %v", got, err)
	}
	if _, err := resolveImage(images, hook, "broken"); err == nil {
		t.Error("hook error swallowed")
	}
	if got, _ := resolveImage(images, hook, "runtime"); got != "/bin/runtime" {
		t.Errorf("map must win over the hook, got %q", got)
	}
	if len(asked) != 2 {
		t.Errorf("hook asked %v, want only the two unknown images", asked)
	}
	// An absolute path to an executable is an image too, once the hook passes.
	exe := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := resolveImage(images, hook, exe); err != nil || got != exe {
		t.Errorf("absolute path = %q, %v", got, err)
	}
}

func TestResolveCommand(t *testing.T) {
	cases := []struct{ cmd, want string }{
		{"/ko-app/runtime", "/bin/runtime"},
		{"runtime", "/bin/runtime"},
		{"/bin/sh", "/bin/sh"},
	}
	for _, c := range cases {
		got, err := resolveCommand(c.cmd, "/bin/runtime", "example.test/test_images/runtime:latest")
		if err != nil || got != c.want {
			t.Errorf("resolveCommand(%q) = %q, %v; want %q", c.cmd, got, err, c.want)
		}
	}
	if _, err := resolveCommand("/no/such/binary", "/bin/runtime", "runtime"); err == nil {
		t.Error("missing absolute command accepted")
	}
}
