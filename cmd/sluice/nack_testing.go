//go:build sluicetesting

package main

import (
	"flag"

	"sluice.dev/sluice/internal/controller"
)

// The e2e tests' build (bin/sluice-testing, `go build -tags sluicetesting`)
// can make Envoy reject an ingress on demand; release builds cannot.
func testingFlags(fs *flag.FlagSet, opts *controller.Options) {
	fs.StringVar(&opts.NACKAnnotation, "testing-nack-annotation", "", "for tests: an ingress with this annotation set to \"true\" gets a translation Envoy rejects")
}
