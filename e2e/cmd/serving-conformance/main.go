// Command serving-conformance runs Knative Serving's own end-to-end tests,
// from the knative.dev/serving module go.mod pins and unmodified, against
// Serving and Sluice on the local stack, the way Serving's CI runs them for
// an ingress: test/conformance/api/..., test/conformance/runtime, test/e2e
// and test/e2e/tagheader (with tag-header-based-routing on).
//
//	go run ./e2e/cmd/serving-conformance              # the whole suite (make serving-conformance)
//	go run ./e2e/cmd/serving-conformance -suite ci    # make test: all but ci.go's leftOut
//
// It prints a table (test, result, seconds) and writes it as JSON to
// e2e/results/. A test that does not pass must be listed in gaps.go with
// the capability of this stack that it misses; any other failure fails the
// run, and so does a listed test that passes now (the list must shrink).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/stack/kubelet"
	"sluice.dev/sluice/e2e/workload"
)

// pkg is one of Serving's test packages: its binary (hack/build-serving.sh
// builds them) and the config-features it runs under.
type pkg struct {
	name     string // test/... path in the serving module
	features map[string]string
}

var pkgs = []pkg{
	{name: "test/conformance/api/v1"},
	{name: "test/conformance/runtime"},
	{name: "test/e2e"},
	{name: "test/e2e/tagheader", features: map[string]string{"tag-header-based-routing": "Enabled"}},
}

// observability is what Serving's CI sets in config-observability
// (test/config/ytt/core/overlay-config-observability.yaml): request logs.
const observability = `{"data":{"logging.enable-request-log":"true","logging.enable-probe-request-log":"true","profiling.enable":"true",` +
	`"logging.request-log-template":"{\"httpRequest\": {\"requestMethod\": \"{{.Request.Method}}\", \"requestUrl\": \"{{js .Request.RequestURI}}\", \"requestSize\": \"{{.Request.ContentLength}}\", \"status\": {{.Response.Code}}, \"responseSize\": \"{{.Response.Size}}\", \"userAgent\": \"{{js .Request.UserAgent}}\", \"remoteIp\": \"{{js .Request.RemoteAddr}}\", \"serverIp\": \"{{.Revision.PodIP}}\", \"referer\": \"{{js .Request.Referer}}\", \"latency\": \"{{.Response.Latency}}s\", \"protocol\": \"{{.Request.Proto}}\"}, \"traceId\": \"{{.TraceID}}\"}"}}`

type result struct {
	Package string  `json:"package"`
	Test    string  `json:"test"`
	Result  string  `json:"result"` // PASS, FAIL, SKIP
	Seconds float64 `json:"seconds"`
	Gap     string  `json:"gap,omitempty"`    // the missing capability that explains a failure
	Reason  string  `json:"reason,omitempty"` // a skip's message, a failure's last lines
}

func main() {
	suite := flag.String("suite", "full", "full (every test of the four packages) or ci (make test: all but the tests ci.go leaves out, each with its reason)")
	parallel := flag.Int("parallel", 4, "tests run at once within a package (go test -parallel)")
	runs := flag.Int("runs", 1, "run the suite this many times")
	flag.Parse()
	if err := run(*suite, *parallel, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "serving-conformance:", err)
		os.Exit(1)
	}
}

func run(suite string, parallel, runs int) error {
	if suite != "full" && suite != "ci" {
		return fmt.Errorf("-suite %q: want full or ci", suite)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("the local stack needs root (network namespaces per pod)")
	}
	ctx := context.Background()
	root, err := stack.FindRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(root, "bin", "serving", "tests")
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(bin, filepath.Base(p.name)+".test")); err != nil {
			return fmt.Errorf("%v; build Serving's tests with hack/build-serving.sh", err)
		}
	}
	images, err := workload.Images(ctx, root)
	if err != nil {
		return err
	}
	begin := time.Now()
	st, err := stack.Start(ctx, stack.Options{Images: images, Serving: true, UnreadyProbePeriod: time.Second, Log: os.Stdout})
	if err != nil {
		return err
	}
	defer st.Stop()
	startup := time.Since(begin)
	servingDir, err := stack.ModuleDir(root, "knative.dev/serving")
	if err != nil {
		return err
	}
	kubectl := func(args ...string) error {
		cmd := exec.Command(filepath.Join(st.Options().BinDir, "kubectl"), args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+st.Kubeconfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	// Serving's CI creates these before its tests, and logs requests.
	for _, f := range []string{"cluster-resources.yaml", "test-resources.yaml", "resource-quota/resource-quota.yaml"} {
		if err := kubectl("apply", "-f", filepath.Join(servingDir, "test", "config", f)); err != nil {
			return err
		}
	}
	if err := kubectl("patch", "configmap", "config-observability", "-n", stack.SystemNS, "--type=merge", "-p", observability); err != nil {
		return err
	}

	var all [][]result
	failed := false
	for i := range runs {
		var rs []result
		for _, p := range pkgs {
			var skip []string
			if suite == "ci" {
				skip = skipped(p.name)
			}
			if err := setFeatures(ctx, st, p.features); err != nil {
				return err
			}
			out, err := runPackage(st, servingDir, bin, p, skip, parallel)
			if err != nil {
				return err
			}
			rs = append(rs, out...)
			if err := setFeatures(ctx, st, disabled(p.features)); err != nil {
				return err
			}
		}
		judge(rs)
		printTable(os.Stdout, i+1, runs, rs)
		if suite == "ci" {
			printLeftOut(os.Stdout)
		}
		for _, r := range rs {
			if r.Result == "FAIL" && r.Gap == "" || r.Result == "PASS" && r.Gap != "" {
				failed = true
			}
		}
		all = append(all, rs)
	}
	if err := save(root, suite, begin, startup, all); err != nil {
		return err
	}
	if failed {
		return fmt.Errorf("a test failed that gaps.go does not explain, or one it lists passed (update gaps.go)")
	}
	return nil
}

// runPackage runs one test binary, but the tests in skip, its output read
// by test2json.
func runPackage(st *stack.Stack, servingDir, bin string, p pkg, skip []string, parallel int) ([]result, error) {
	args := []string{
		"-test.v", "-test.timeout=50m", fmt.Sprintf("-test.parallel=%d", parallel),
		"--kubeconfig=" + st.Kubeconfig,
		// The gateway Service's node ports are the external listeners, at
		// the bridge address both this host and the pods reach.
		"--ingressendpoint=" + st.BridgeIP,
		"--ingress-class=" + stack.IngressClass,
		"--dockerrepo=" + stack.ServingTestRepo,
		"--resolvabledomain=false",
		"--enable-alpha", "--enable-beta",
	}
	env := append(os.Environ(),
		"GATEWAY_OVERRIDE="+stack.ExternalGWName, "GATEWAY_NAMESPACE_OVERRIDE="+stack.SystemNS,
		"SYSTEM_NAMESPACE="+stack.SystemNS)
	testBin := filepath.Join(bin, filepath.Base(p.name)+".test")
	// What must report: the binary's own list, but the tests skipped.
	list := exec.Command(testBin, append(slices.Clone(args), "-test.list=.")...)
	list.Dir, list.Env = filepath.Join(servingDir, p.name), env
	listOut, err := list.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -test.list: %v", p.name, err)
	}
	listed, err := withoutLeftOut(p.name, listedTests(string(listOut)), skip)
	if err != nil {
		return nil, err
	}
	if len(listed) == 0 {
		return nil, fmt.Errorf("%s lists no test", p.name)
	}
	if len(skip) > 0 {
		args = append(args, "-test.skip=^("+strings.Join(skip, "|")+")$")
	}
	fmt.Printf("\n==> %s (%d tests, %d left out)\n", p.name, len(listed), len(skip))
	cmd := exec.Command("go", append([]string{"tool", "test2json", "-t", "-p", p.name, testBin}, args...)...)
	cmd.Dir = filepath.Join(servingDir, p.name)
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	logPath := filepath.Join(st.Options().Root, "e2e", "results", fmt.Sprintf("serving-conformance-%s-%s.log", time.Now().UTC().Format("20060102-150405"), filepath.Base(p.name)))
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	raw, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	fmt.Printf("    (the whole output, with Serving's own logs the tests stream: %s)\n", logPath)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	rs, pkgFailed := collect(stdout, p.name, raw, os.Stdout)
	return closeOut(p.name, listed, rs, pkgFailed, cmd.Wait()), nil
}

// listedTests reads -test.list's output: a test name a line.
func listedTests(out string) []string {
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "Test") && !strings.ContainsAny(l, " \t:") {
			names = append(names, l)
		}
	}
	return names
}

// closeOut fails closed: a listed test without a result (the binary
// crashed, hung until its timeout, or stopped before it), and a package
// that failed or a binary that exited non-zero with no failed test to say
// why, each become a failure no gap explains.
func closeOut(pkgName string, listed []string, rs []result, pkgFailed bool, exit error) []result {
	got := map[string]bool{}
	failedTest := false
	for _, r := range rs {
		got[r.Test] = true
		failedTest = failedTest || r.Result == "FAIL"
	}
	why := "the test binary ended without reporting it"
	if exit != nil {
		why += " (" + exit.Error() + ")"
	}
	for _, name := range listed {
		if !got[name] {
			rs = append(rs, result{Package: pkgName, Test: name, Result: "FAIL", Reason: why})
			failedTest = true
		}
	}
	if (pkgFailed || exit != nil) && !failedTest {
		reason := "the package failed with every test passed"
		if exit != nil {
			reason += ": " + exit.Error()
		}
		rs = append(rs, result{Package: pkgName, Test: "(package)", Result: "FAIL", Reason: reason})
	}
	return rs
}

// event is one line of test2json.
type event struct {
	Action  string
	Test    string
	Elapsed float64
	Output  string
}

// collect reads test2json events: the result of each top-level test, with
// a skip's message or a failure's last output lines. The output goes to
// raw; each result is printed to progress as it comes, a failure with its
// last lines.
func collect(r io.Reader, pkgName string, raw, progress io.Writer) (rs []result, pkgFailed bool) {
	out := map[string][]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if e.Action == "output" {
			_, _ = io.WriteString(raw, e.Output)
			if e.Test != "" {
				top, _, _ := strings.Cut(e.Test, "/")
				out[top] = append(out[top], strings.TrimRight(e.Output, "\n"))
				if len(out[top]) > 400 {
					out[top] = out[top][200:]
				}
			}
			continue
		}
		if e.Test == "" && e.Action == "fail" {
			pkgFailed = true
		}
		if e.Test == "" || strings.Contains(e.Test, "/") {
			continue
		}
		switch e.Action {
		case "pass", "fail", "skip":
			res := result{Package: pkgName, Test: e.Test, Result: strings.ToUpper(e.Action), Seconds: e.Elapsed}
			lines := out[e.Test]
			switch e.Action {
			case "skip":
				res.Reason = skipReason(lines)
			case "fail":
				res.Reason = strings.Join(lines[max(0, len(lines)-8):], "\n")
			}
			fmt.Fprintf(progress, "--- %s: %s (%.1fs)\n", res.Result, res.Test, res.Seconds)
			if res.Result == "FAIL" {
				fmt.Fprintln(progress, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
			rs = append(rs, res)
		}
	}
	return rs, pkgFailed
}

// skipReason is the last line a skipped test printed (its t.Skip message).
func skipReason(lines []string) string {
	for _, l := range slices.Backward(lines) {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "===") && !strings.HasPrefix(t, "--- SKIP") {
			return t
		}
	}
	return ""
}

// judge attaches to each result the gap that explains it.
func judge(rs []result) {
	noCgroups := kubelet.CheckCgroups()
	for i := range rs {
		key := rs[i].Package + "." + rs[i].Test
		rs[i].Gap = gaps[key]
		if noCgroups != nil && cgroupTests[key] {
			rs[i].Gap = "resource limits: this machine gives the pod runner no cgroups (" + noCgroups.Error() + ")"
		}
	}
}

func printTable(w io.Writer, i, n int, rs []result) {
	count := map[string]int{}
	for _, r := range rs {
		count[r.Result]++
	}
	fmt.Fprintf(w, "\nKnative Serving conformance and e2e, run %d of %d: %d passed, %d failed, %d skipped\n", i, n, count["PASS"], count["FAIL"], count["SKIP"])
	fmt.Fprintf(w, "%-26s %-52s %-6s %8s  %s\n", "PACKAGE", "TEST", "RESULT", "SECONDS", "WHY NOT PASSED")
	for _, r := range rs {
		why := r.Gap
		if r.Result == "SKIP" {
			why = "skipped by the test: " + r.Reason
		} else if r.Result == "FAIL" && why == "" {
			why = "UNEXPLAINED FAILURE"
		} else if r.Result == "PASS" && why != "" {
			why = "passes now: remove it from gaps.go"
		} else if r.Result == "PASS" {
			why = ""
		}
		fmt.Fprintf(w, "%-26s %-52s %-6s %8.1f  %s\n", strings.TrimPrefix(r.Package, "test/"), r.Test, r.Result, r.Seconds, why)
	}
	// Repeated after the table, where a CI log's tail still shows them.
	for _, r := range rs {
		if r.Result == "FAIL" && r.Gap == "" {
			fmt.Fprintf(w, "\n%s %s failed; its last lines:\n%s\n", strings.TrimPrefix(r.Package, "test/"), r.Test, r.Reason)
		}
	}
}

func save(root, suite string, begin time.Time, startup time.Duration, runs [][]result) error {
	dir := filepath.Join(root, "e2e", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	doc := map[string]any{"started": begin.UTC(), "suite": suite, "stackStartupSeconds": startup.Seconds(), "runs": runs}
	if suite == "ci" {
		doc["leftOut"] = leftOut
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, "serving-conformance-"+begin.UTC().Format("20060102-150405")+".json")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("serving-conformance: results in", p)
	return nil
}

// setFeatures patches config-features.
func setFeatures(ctx context.Context, st *stack.Stack, f map[string]string) error {
	if len(f) == 0 {
		return nil
	}
	b, _ := json.Marshal(map[string]any{"data": f})
	_, err := st.Client.CoreV1().ConfigMaps(stack.SystemNS).Patch(ctx, "config-features", types.MergePatchType, b, metav1.PatchOptions{})
	return err
}

func disabled(f map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(f)) {
		out[k] = "Disabled"
	}
	return out
}
