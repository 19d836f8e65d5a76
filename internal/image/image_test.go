package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestBuild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sluice")
	want := []byte("\x7fELF not really, but bytes to carry")
	if err := os.WriteFile(bin, want, 0o755); err != nil {
		t.Fatal(err)
	}
	m := Meta{Version: "v1.2.3", Revision: "abc", Created: time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), OS: "linux", Arch: "amd64"}
	img, err := Build(bin, m)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != User || len(c.Entrypoint) != 1 || c.Entrypoint[0] != Path || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config: user %q entrypoint %v platform %s/%s", c.User, c.Entrypoint, cf.OS, cf.Architecture)
	}
	if c.Labels["org.opencontainers.image.version"] != "v1.2.3" || c.Labels["org.opencontainers.image.revision"] != "abc" ||
		c.Labels["org.opencontainers.image.created"] != "2026-11-29T00:00:00Z" {
		t.Errorf("labels: %v", c.Labels)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", mt)
	}
	got, err := Binary(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the image's %s differs from the binary", Path)
	}
	// The same input gives the same digest (the created time is the commit's).
	again, err := Build(bin, m)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of one binary: %s and %s", d1, d2)
	}
	m.Version = "v1.2.4"
	other, err := Build(bin, m)
	if err != nil {
		t.Fatal(err)
	}
	if d3, _ := other.Digest(); d3 == d1 {
		t.Error("another version kept the digest")
	}
}

func TestBuildRefuses(t *testing.T) {
	if _, err := Build(filepath.Join(t.TempDir(), "missing"), Meta{Version: "v", OS: "linux", Arch: "amd64"}); err == nil {
		t.Error("a missing binary was accepted")
	}
	bin := filepath.Join(t.TempDir(), "sluice")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(bin, Meta{OS: "linux", Arch: "amd64"}); err == nil {
		t.Error("an image without a version was accepted")
	}
}
