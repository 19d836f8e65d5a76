//go:build e2e

package e2e

import (
	"bytes"
	"debug/elf"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"sluice.dev/sluice/internal/image"
)

// TestImage runs `make image` as the README says (no Docker: hack/image on
// go-containerregistry), pushing to a registry served on loopback, then
// opens the tarball: the config (user, entrypoint, labels), the binary
// inside being the one built, static, with the version stamped; the pushed
// image being the same; and a rebuild giving the same digest.
func TestImage(t *testing.T) {
	root := helmRoot(t)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref := strings.TrimPrefix(reg.URL, "http://") + "/sluice:e2e"
	const version = "v0.0.0-e2e"
	cmd := exec.Command("make", "image", "VERSION="+version, "IMAGE="+ref, "PUSH=1")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Logf("make image:\n%s", out)
	img, err := tarball.ImageFromPath(filepath.Join(root, "bin", "sluice-image.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	c := cf.Config
	if c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != "/sluice" || strings.Join(c.Cmd, " ") != "controller" || cf.OS != "linux" {
		t.Errorf("config: user %q entrypoint %v cmd %v os %s", c.User, c.Entrypoint, c.Cmd, cf.OS)
	}
	if c.Labels["org.opencontainers.image.version"] != version || c.Labels["org.opencontainers.image.revision"] != strings.TrimSpace(string(rev)) ||
		c.Labels["org.opencontainers.image.title"] != "sluice" {
		t.Errorf("labels %v", c.Labels)
	}
	if layers, _ := img.Layers(); len(layers) != 1 {
		t.Errorf("%d layers, want the binary's alone", len(layers))
	}
	inImage, err := image.Binary(img)
	if err != nil {
		t.Fatal(err)
	}
	built, err := os.ReadFile(filepath.Join(root, "bin", "image", "sluice"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inImage, built) {
		t.Fatal("the binary in the image is not bin/image/sluice")
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	if err := os.WriteFile(bin, inImage, 0o755); err != nil {
		t.Fatal(err)
	}
	checkStatic(t, bin)
	if v, err := exec.Command(bin, "version").Output(); err != nil || strings.TrimSpace(string(v)) != "sluice "+version {
		t.Errorf("the image's binary: version %q %v", v, err)
	}

	// The pushed image, and the same image built again from the same
	// binary and commit.
	pushed, err := remote.Image(mustRef(t, ref))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	created, err := time.Parse(time.RFC3339, c.Labels["org.opencontainers.image.created"])
	if err != nil {
		t.Fatal(err)
	}
	again, err := image.Build(filepath.Join(root, "bin", "image", "sluice"), image.Meta{Version: version,
		Revision: c.Labels["org.opencontainers.image.revision"], Created: created, OS: cf.OS, Arch: cf.Architecture})
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := pushed.Digest()
	d2, _ := again.Digest()
	c1, _ := img.ConfigName()
	c2, _ := again.ConfigName()
	if d1 != d2 || c1 != c2 {
		t.Errorf("pushed %s (config %s), rebuilt %s (config %s): want the same", d1, c1, d2, c2)
	}
	t.Logf("image %s, config %s, %d MiB binary", d1, c1, len(inImage)>>20)
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func checkStatic(t *testing.T, bin string) {
	t.Helper()
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
