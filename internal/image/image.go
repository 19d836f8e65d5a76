// Package image makes the controller's container image from a built binary
// with go-containerregistry: one layer holding /sluice on an empty base,
// non-root, OCI media types and labels. No Docker daemon is involved, and
// the same binary and metadata give the same image digest.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Path is where the binary lives in the image, and its entrypoint.
const Path = "/sluice"

// User is the image's user: the conventional nonroot uid and gid, which the
// chart's securityContext also names.
const User = "65532:65532"

// Meta is what the image says about itself.
type Meta struct {
	Version  string    // org.opencontainers.image.version
	Revision string    // the git commit, org.opencontainers.image.revision
	Created  time.Time // the commit's time: a rebuild gives the same digest
	Source   string    // org.opencontainers.image.source, optional
	OS, Arch string    // the binary's platform (GOOS, GOARCH)
}

// Labels are the image's OCI annotations as config labels.
func (m Meta) Labels() map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "sluice",
		"org.opencontainers.image.description": "Knative networking layer: an xDS control plane for Envoy",
		"org.opencontainers.image.licenses":    "Apache-2.0",
		"org.opencontainers.image.version":     m.Version,
		"org.opencontainers.image.revision":    m.Revision,
		"org.opencontainers.image.created":     m.Created.UTC().Format(time.RFC3339),
	}
	if m.Source != "" {
		l["org.opencontainers.image.source"] = m.Source
	}
	return l
}

// Build makes the image from the binary at bin.
func Build(bin string, m Meta) (v1.Image, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	if m.Version == "" || m.OS == "" || m.Arch == "" {
		return nil, fmt.Errorf("image of %s: version, OS and architecture are required", bin)
	}
	layer, err := binaryLayer(b, m.Created)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = m.OS, m.Arch
	cf.Created = v1.Time{Time: m.Created.UTC()}
	cf.Author = "sluice"
	cf.Config = v1.Config{
		User:       User,
		Entrypoint: []string{Path},
		Cmd:        []string{"controller"},
		// xDS, then metrics and probes (the chart's defaults).
		ExposedPorts: map[string]struct{}{"18000/tcp": {}, "19000/tcp": {}},
		Labels:       m.Labels(),
		Env:          []string{"PATH=/"},
	}
	cf.History = []v1.History{{Created: cf.Created, CreatedBy: "sluice image: " + Path, Comment: "static Go binary"}}
	return mutate.ConfigFile(img, cf)
}

// binaryLayer is a layer with one executable file at Path, owned by root
// (the image runs as User; the binary needs only to be readable).
func binaryLayer(b []byte, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	h := &tar.Header{Name: Path[1:], Mode: 0o755, Size: int64(len(b)), ModTime: mtime.UTC(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := w.WriteHeader(h); err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// Binary returns the contents of Path in img (for tests and checks).
func Binary(img v1.Image) ([]byte, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("the image has no %s", Path)
		}
		if err != nil {
			return nil, err
		}
		if "/"+h.Name == Path || h.Name == Path {
			if h.Mode&0o111 == 0 {
				return nil, fmt.Errorf("%s is not executable in the image (mode %o)", Path, h.Mode)
			}
			return io.ReadAll(tr)
		}
	}
}
