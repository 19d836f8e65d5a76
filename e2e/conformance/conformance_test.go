//go:build e2e

package conformance

import (
	"testing"

	"knative.dev/networking/test/conformance/ingress"
)

// TestIngressConformance is the upstream suite, as its own run_test.go calls it.
func TestIngressConformance(t *testing.T) {
	ingress.RunConformance(t)
}
