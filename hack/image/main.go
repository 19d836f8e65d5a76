// Command image writes the controller's image from a built binary as a
// tarball (`docker load`, `podman load`, `ctr images import`, `kind load
// image-archive` read it) and pushes it when -push names a reference. make
// image runs it; see internal/image.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"sluice.dev/sluice/internal/image"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("binary", "", "the static sluice binary")
	out := flag.String("o", "", "write the image tarball here")
	tag := flag.String("tag", "", "the name and tag recorded in the tarball (default sluice:VERSION)")
	push := flag.String("push", "", "push to this reference (registry/repository:tag), with the credentials of ~/.docker/config.json")
	var m image.Meta
	flag.StringVar(&m.Version, "version", "", "the version (org.opencontainers.image.version)")
	flag.StringVar(&m.Revision, "revision", "", "the git commit")
	created := flag.String("created", "", "RFC 3339 time of the commit (a rebuild gives the same digest)")
	flag.StringVar(&m.Source, "source", "", "the source repository URL, optional")
	flag.StringVar(&m.OS, "os", runtime.GOOS, "the binary's OS")
	flag.StringVar(&m.Arch, "arch", runtime.GOARCH, "the binary's architecture")
	flag.Parse()
	if *bin == "" || (*out == "" && *push == "") {
		return fmt.Errorf("-binary and -o or -push are required")
	}
	if *created != "" {
		t, err := time.Parse(time.RFC3339, *created)
		if err != nil {
			return fmt.Errorf("-created: %w", err)
		}
		m.Created = t
	}
	img, err := image.Build(*bin, m)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if *out != "" {
		if *tag == "" {
			*tag = "sluice:" + m.Version
		}
		ref, err := name.NewTag(*tag)
		if err != nil {
			return fmt.Errorf("-tag: %w", err)
		}
		if err := tarball.WriteToFile(*out, ref, img); err != nil {
			return err
		}
		fmt.Printf("%s: %s %s\n", *out, ref, digest)
	}
	if *push != "" {
		ref, err := name.ParseReference(*push)
		if err != nil {
			return fmt.Errorf("-push: %w", err)
		}
		if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return err
		}
		fmt.Printf("pushed %s@%s\n", ref.Context(), digest)
	}
	return nil
}
