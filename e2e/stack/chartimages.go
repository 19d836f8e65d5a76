package stack

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"sluice.dev/sluice/internal/image"
)

// ChartImages maps the Helm chart's images to executables for the pod
// runner: the controller's ("sluice", whatever the registry and tag) to
// the binary inside the image tarball `make image` wrote, taken out into
// binDir/images, and Envoy's ("envoyproxy/envoy") to binDir/envoy.
func ChartImages(binDir, imageTar string) (map[string]string, error) {
	img, err := tarball.ImageFromPath(imageTar, nil)
	if err != nil {
		return nil, fmt.Errorf("image tarball %s (make image writes it): %w", imageTar, err)
	}
	b, err := image.Binary(img)
	if err != nil {
		return nil, fmt.Errorf("image tarball %s: %w", imageTar, err)
	}
	bin := filepath.Join(binDir, "images", "sluice-from-image")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return nil, err
	}
	// A new file, not a rewrite: a running pod may be executing the old one.
	tmp := bin + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return nil, err
	}
	envoy := filepath.Join(binDir, "envoy")
	if !exists(envoy) {
		return nil, fmt.Errorf("%s is missing; install it with: hack/install-envoy.sh", envoy)
	}
	return map[string]string{"sluice": bin, "envoy": envoy}, nil
}
