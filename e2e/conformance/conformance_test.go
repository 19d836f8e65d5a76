//go:build e2e

package conformance

import (
	"testing"
	"time"

	"knative.dev/networking/test/conformance/ingress"
)

// TestIngressConformance is the upstream suite, as its own run_test.go calls it.
func TestIngressConformance(t *testing.T) {
	start := time.Now()
	// A parent's cleanup runs once all its parallel subtests are done.
	t.Cleanup(func() { wallTimes = append(wallTimes, time.Since(start)) })
	ingress.RunConformance(t)
}

// wallTimes holds the duration of each run of the whole suite (-count=N).
var wallTimes []time.Duration
