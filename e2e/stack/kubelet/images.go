package kubelet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// TestImageNames are the Knative networking conformance images, each a main
// package under test/test_images/<name> of knative.dev/networking.
var TestImageNames = []string{"runtime", "timeout", "retry", "wsserver", "grpc-ping", "httpproxy"}

// imageCandidates lists the names an image reference is looked up under, most
// specific first: as written, without digest, without tag, and its last path
// element ("ko.local/x/test_images/runtime:latest" -> "runtime").
func imageCandidates(image string) []string {
	out := []string{image}
	add := func(s string) {
		if s != "" && s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	ref := image
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
		add(ref)
	}
	// A colon after the last slash is a tag; one before it is a registry port.
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
		add(ref)
	}
	add(path.Base(ref))
	return out
}

// resolveImage maps an image reference to an executable on this machine.
func resolveImage(images map[string]string, hook func(string) (string, error), image string) (string, error) {
	if image == "" {
		return "", errors.New("container has no image")
	}
	for _, c := range imageCandidates(image) {
		if bin, ok := images[c]; ok {
			return bin, nil
		}
	}
	if hook != nil {
		bin, err := hook(image)
		if err != nil {
			return "", err
		}
		if bin != "" {
			return bin, nil
		}
	}
	if filepath.IsAbs(image) && isExecutable(image) {
		return image, nil
	}
	return "", fmt.Errorf("no executable known for image %q", image)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// BuildTestImages builds the Knative conformance test images (all of
// TestImageNames unless names are given) from the knative.dev/networking
// version pinned in the sluice go.mod, into binDir, and returns image name ->
// binary path. Binaries already built from the same module version are
// reused. It must run with the working directory inside the sluice module.
func BuildTestImages(ctx context.Context, binDir string, names ...string) (map[string]string, error) {
	if len(names) == 0 {
		names = TestImageNames
	}
	modDir, version, err := networkingModule(ctx)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	binDir, err = filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	stamp := filepath.Join(binDir, ".knative-networking-version")
	sameVersion := false
	if b, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(b)) == version {
		sameVersion = true
	}
	out := map[string]string{}
	var pkgs []string
	for _, n := range names {
		bin := filepath.Join(binDir, n)
		out[n] = bin
		if !sameVersion || !isExecutable(bin) {
			pkgs = append(pkgs, "./test/test_images/"+n)
		}
	}
	if len(pkgs) == 0 {
		return out, nil
	}
	// Build inside the networking module itself: its go.mod and go.sum carry
	// the test images' own dependencies (websocket, dnscache, ...).
	if !sameVersion {
		_ = os.Remove(stamp)
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", binDir + "/"}, pkgs...)...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building test images %v: %w\n%s", pkgs, err, buf.String())
	}
	if err := os.WriteFile(stamp, []byte(version+"\n"), 0o644); err != nil {
		return nil, err
	}
	return out, nil
}

// networkingModule returns the directory and version of knative.dev/networking
// as resolved by the enclosing module.
func networkingModule(ctx context.Context) (dir, version string, err error) {
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}\t{{.Version}}", "knative.dev/networking")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m knative.dev/networking: %w: %s", err, stderr.String())
	}
	dir, version, _ = strings.Cut(strings.TrimSpace(string(b)), "\t")
	if dir == "" {
		return "", "", errors.New("knative.dev/networking is not downloaded; run go mod download knative.dev/networking")
	}
	return dir, version, nil
}
