package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// leftOut lists, by package and test, what `-suite ci` (make test) does
// not run of the full suite (make serving-conformance), each with why.
// Everything else runs in both. Each entry costs minutes of waiting that
// Serving's test spends by design, on behaviour other tests in the run
// already take through the ingress.
var leftOut = map[string]string{
	"test/e2e.TestEgressTraffic": "a gap (gaps.go): it waits 5 minutes for a call to the internet that can never succeed here",
	"test/e2e.TestAutoscaleSustaining": "4 minutes of steady load to check the autoscaler keeps its pods; " +
		"requests reach the revision through the ingress as in TestAutoscaleUpCountPods, which runs",
	"test/e2e.TestMinScaleTransition": "4 minutes waiting out the autoscaler's scale-down windows between min-scale changes; " +
		"routing to a min-scale revision is TestMinScale's, which runs",
	"test/e2e.TestImagePullError": "2 minutes waiting for Serving's controller to report an image pull that fails; " +
		"no revision becomes Ready, so no KIngress routes anything",
}

// skipped names a package's left-out tests.
func skipped(pkgName string) []string {
	var names []string
	for key := range leftOut {
		if p, test, _ := strings.Cut(key, "."); p == pkgName {
			names = append(names, test)
		}
	}
	slices.Sort(names)
	return names
}

// withoutLeftOut is what a package must report under -suite ci: its
// listed tests without the left-out ones. A left-out test the binary does
// not list is an error: the list must name tests that exist.
func withoutLeftOut(pkgName string, listed, skip []string) ([]string, error) {
	for _, name := range skip {
		if !slices.Contains(listed, name) {
			return nil, fmt.Errorf("ci.go leaves out %s.%s, which %s does not list", pkgName, name, pkgName)
		}
	}
	return slices.DeleteFunc(slices.Clone(listed), func(n string) bool { return slices.Contains(skip, n) }), nil
}

// printLeftOut follows the table of a -suite ci run.
func printLeftOut(w io.Writer) {
	fmt.Fprintf(w, "\nLeft out of -suite ci (make serving-conformance runs them):\n")
	for _, key := range slices.Sorted(maps.Keys(leftOut)) {
		p, test, _ := strings.Cut(key, ".")
		fmt.Fprintf(w, "%-26s %-52s %s\n", strings.TrimPrefix(p, "test/"), test, leftOut[key])
	}
}
