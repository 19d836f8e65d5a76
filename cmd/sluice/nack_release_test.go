//go:build !sluicetesting

package main

import (
	"strings"
	"testing"
)

// The NACK injection flag is only in the tests' build.
func TestReleaseHasNoTestingFlags(t *testing.T) {
	code, _, errs := runCLI("controller", "--testing-nack-annotation=x")
	if code == 0 || !strings.Contains(errs, "flag provided but not defined: -testing-nack-annotation") {
		t.Fatalf("exit %d, stderr %q: the release build accepts --testing-nack-annotation", code, errs)
	}
}
