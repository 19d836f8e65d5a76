package conformance

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// suite lists the upstream suite's tests (stable, beta, alpha); its own
// lists are unexported. A run passes only with all of them passed.
var suite = []string{
	"basics", "basics/http2", "grpc", "grpc/split",
	"headers/pre-split", "headers/post-split", "headers/probe",
	"hosts/multiple", "dispatch/path", "dispatch/percentage",
	"dispatch/path_and_percentage", "dispatch/rule", "retry", "timeout",
	"tls", "update", "visibility", "visibility/split", "visibility/path",
	"ingressclass", "websocket", "websocket/split",
	"host-rewrite", "headers/tags", // beta
	"httpoption", // alpha
}

const top = "TestIngressConformance"

// Under go test -json the test binary frames these lines with a ^V byte.
var (
	resultLine = regexp.MustCompile(`^\s*\x16?--- (PASS|FAIL|SKIP): (` + top + `(?:/\S+)?) \((\d+(?:\.\d+)?)s\)`)
	headerLine = regexp.MustCompile(`^\x16?=== (RUN|PAUSE|CONT|NAME)\s+(` + top + `/\S+)`)
)

// tailLines is how much of a failed test's output is kept: the suite's
// errors come last, after its "Using port" and polling lines.
const tailLines = 40

// scan collects the result lines. Go prints a parallel parent's line
// before or after its subtests' depending on the mode, so the k-th result of
// a test is put in run k whatever the order. Output lines belong to the
// test named by the last "=== RUN/CONT/NAME" header; a failed test keeps its
// last lines, so a failure in CI says why without the whole log.
func scan(r io.Reader) []suiteRun {
	known := map[string]bool{}
	for _, n := range suite {
		known[n] = true
	}
	var parents []string
	results := map[string][]testResult{}
	ran := map[string]int{} // results seen per test, any depth: its run index
	tails := map[string][]string{}
	failures := map[int][]failure{}
	current := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if h := headerLine.FindStringSubmatch(line); h != nil {
			current = strings.TrimPrefix(h[2], top+"/")
			if h[1] == "RUN" {
				tails[current] = nil
			}
			continue
		}
		mm := resultLine.FindStringSubmatch(line)
		if mm == nil {
			if current != "" {
				t := append(tails[current], line)
				if len(t) > tailLines {
					t = t[len(t)-tailLines:]
				}
				tails[current] = t
			}
			continue
		}
		if mm[2] == top {
			parents = append(parents, mm[1])
			continue
		}
		name := strings.TrimPrefix(mm[2], top+"/")
		run := ran[name]
		ran[name]++
		if mm[1] == "FAIL" {
			failures[run] = append(failures[run], failure{Name: name, Output: tails[name]})
		}
		if !known[name] { // a subtest of one of the tests
			continue
		}
		secs, _ := strconv.ParseFloat(mm[3], 64)
		results[name] = append(results[name], testResult{Name: name, Result: mm[1], Seconds: secs})
	}
	io.Copy(io.Discard, r)
	runs := make([]suiteRun, len(parents))
	for i := range runs {
		runs[i].Result = parents[i]
		runs[i].Failures = innermost(failures[i], known)
		for _, name := range sortedSuite() {
			if i < len(results[name]) {
				t := results[name][i]
				runs[i].Tests = append(runs[i].Tests, t)
				if t.Result == "PASS" {
					runs[i].Passed++
				}
			}
		}
	}
	return runs
}

// innermost drops a failed test whose subtest failed too: the subtest's
// lines say why, the parent's only repeat its setup. Suite tests named like
// subtests ("visibility/path") are the suite's own, not visibility's.
func innermost(fs []failure, known map[string]bool) []failure {
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	var out []failure
	for _, f := range fs {
		if !slices.ContainsFunc(fs, func(g failure) bool {
			return !known[g.Name] && strings.HasPrefix(g.Name, f.Name+"/")
		}) {
			out = append(out, f)
		}
	}
	return out
}

type testResult struct {
	Name    string  `json:"name"`
	Result  string  `json:"result"`
	Seconds float64 `json:"seconds"`
}

// failure is a failed test, at any depth, with the last lines it printed.
type failure struct {
	Name   string   `json:"name"`
	Output []string `json:"output"`
}

type suiteRun struct {
	Result   string       `json:"result"`
	Seconds  float64      `json:"seconds"`
	Passed   int          `json:"passed"`
	Tests    []testResult `json:"tests"`
	Failures []failure    `json:"failures,omitempty"`
}

func printTable(w io.Writer, i, n int, r suiteRun) {
	fmt.Fprintf(w, "\nKnative ingress conformance, run %d of %d: %d/%d passed in %.1fs\n", i, n, r.Passed, len(suite), r.Seconds)
	seen := map[string]testResult{}
	for _, t := range r.Tests {
		seen[t.Name] = t
	}
	fmt.Fprintf(w, "%-30s %-6s %9s\n", "TEST", "RESULT", "SECONDS")
	for _, name := range sortedSuite() {
		t, ok := seen[name]
		if !ok {
			fmt.Fprintf(w, "%-30s %-6s %9s\n", name, "-", "-")
			continue
		}
		fmt.Fprintf(w, "%-30s %-6s %9.2f\n", name, t.Result, t.Seconds)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(w, "\n%s failed; its last lines:\n", f.Name)
		for _, l := range f.Output {
			fmt.Fprintln(w, l)
		}
	}
}

func sortedSuite() []string {
	s := append([]string(nil), suite...)
	sort.Strings(s)
	return s
}
