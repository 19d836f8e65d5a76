//go:build !sluicetesting

package main

import (
	"flag"

	"sluice.dev/sluice/internal/controller"
)

// testingFlags adds the flags only tests use; see nack_testing.go.
func testingFlags(*flag.FlagSet, *controller.Options) {}
