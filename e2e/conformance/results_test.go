package conformance

import (
	"bytes"
	"strings"
	"testing"
)

// A run as go test -v prints it: parallel tests' lines under "=== NAME"
// headers, a nested subtest failing, and a suite test ("visibility/path")
// whose name looks like a subtest of another.
const verboseRun = `=== RUN   TestIngressConformance
=== RUN   TestIngressConformance/visibility
=== PAUSE TestIngressConformance/visibility
=== RUN   TestIngressConformance/visibility/path
=== PAUSE TestIngressConformance/visibility/path
=== CONT  TestIngressConformance/visibility
    util.go:234: [v] Using port 55
=== RUN   TestIngressConformance/visibility/short
=== PAUSE TestIngressConformance/visibility/short
=== CONT  TestIngressConformance/visibility/path
    util.go:234: [p] Using port 56
=== CONT  TestIngressConformance/visibility/short
    util.go:234: [s] Using port 57
=== NAME  TestIngressConformance/visibility/path
    visibility.go:300: path went wrong
=== NAME  TestIngressConformance/visibility/short
    util.go:1160: Error making GET request: 503
--- FAIL: TestIngressConformance (0.00s)
    --- FAIL: TestIngressConformance/visibility (3.49s)
        --- FAIL: TestIngressConformance/visibility/short (1.25s)
    --- FAIL: TestIngressConformance/visibility/path (11.69s)
FAIL
`

func TestScanKeepsFailedTestsLines(t *testing.T) {
	runs := scan(strings.NewReader(verboseRun))
	if len(runs) != 1 {
		t.Fatalf("got %d runs, want 1", len(runs))
	}
	r := runs[0]
	if r.Result != "FAIL" || r.Passed != 0 || len(r.Tests) != 2 {
		t.Errorf("run: result %s, %d passed, %d tests; want FAIL, 0, 2", r.Result, r.Passed, len(r.Tests))
	}
	// visibility failed only through visibility/short, so only the latter;
	// visibility/path is the suite's own test and keeps its lines.
	want := map[string][]string{
		"visibility/path":  {"    util.go:234: [p] Using port 56", "    visibility.go:300: path went wrong"},
		"visibility/short": {"    util.go:234: [s] Using port 57", "    util.go:1160: Error making GET request: 503"},
	}
	if len(r.Failures) != len(want) {
		t.Fatalf("failures %+v, want %v", r.Failures, want)
	}
	for _, f := range r.Failures {
		if strings.Join(f.Output, "\n") != strings.Join(want[f.Name], "\n") {
			t.Errorf("%s kept %q, want %q", f.Name, f.Output, want[f.Name])
		}
	}

	var b bytes.Buffer
	printTable(&b, 1, 1, r)
	out := b.String()
	i := strings.Index(out, "visibility/short failed; its last lines:\n    util.go:234: [s] Using port 57\n    util.go:1160: Error making GET request: 503\n")
	if i < 0 || i < strings.Index(out, "websocket/split") {
		t.Errorf("the failure's lines are not after the table:\n%s", out)
	}
}

func TestScanKeepsOnlyTheLastLines(t *testing.T) {
	var in strings.Builder
	in.WriteString("=== RUN   TestIngressConformance/update\n")
	for i := range tailLines + 10 {
		in.WriteString("    update.go:192: line " + string(rune('a'+i%26)) + "\n")
	}
	in.WriteString("    update.go:200: the error\n")
	in.WriteString("--- FAIL: TestIngressConformance (0.00s)\n    --- FAIL: TestIngressConformance/update (45.00s)\n")
	f := scan(strings.NewReader(in.String()))[0].Failures
	if len(f) != 1 || len(f[0].Output) != tailLines || f[0].Output[tailLines-1] != "    update.go:200: the error" {
		t.Errorf("got %+v, want the last %d lines ending with the error", f, tailLines)
	}
}
