package e2e

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestImageBinaryStatic runs deploy/Dockerfile's `go build` line (Docker
// cannot run here) and checks the binary is static, and that the Dockerfile
// copies every package the binary is built from.
func TestImageBinaryStatic(t *testing.T) {
	root := helmRoot(t)
	df, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var build string
	copied := map[string]bool{}
	for _, line := range strings.Split(string(df), "\n") {
		if s, ok := strings.CutPrefix(line, "RUN "); ok && strings.Contains(s, "go build") {
			build = s
		}
		if f := strings.Fields(line); len(f) == 3 && f[0] == "COPY" && strings.HasSuffix(f[1], "/") {
			copied[strings.TrimSuffix(f[1], "/")] = true
		}
		if strings.HasPrefix(line, "USER ") && (strings.Contains(line, "root") || strings.HasPrefix(line, "USER 0")) {
			t.Errorf("the image runs as root: %s", line)
		}
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(string(df), "\nUSER 65532") {
		t.Fatalf("Dockerfile: want a CGO_ENABLED=0 build and a non-root USER; build line %q", build)
	}
	// The packages of cmd/sluice in this module must all be copied.
	list := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if eq .Module.Path \"sluice.dev/sluice\"}}{{.ImportPath}}{{end}}{{end}}", "./cmd/sluice")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		top := strings.SplitN(strings.TrimPrefix(p, "sluice.dev/sluice/"), "/", 2)[0]
		if !copied[top] {
			t.Errorf("the Dockerfile does not COPY %s/ (needed by %s)", top, p)
		}
	}

	// The build context is cut down to an allowlist; it must keep up.
	ignore, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for dir := range copied {
		if !strings.Contains(string(ignore), "\n!"+dir+"/\n") {
			t.Errorf("deploy/Dockerfile.dockerignore leaves %s/ out of the build context", dir)
		}
	}

	bin := filepath.Join(t.TempDir(), "sluice")
	build = strings.ReplaceAll(build, "/out/sluice", bin)
	build = strings.ReplaceAll(build, "${VERSION}", "e2e")
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", build, err, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static", bin, p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v", bin, libs)
	}
	v, err := exec.Command(bin, "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "sluice e2e" {
		t.Errorf("%s version: %q %v", bin, v, err)
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
