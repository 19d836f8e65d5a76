//go:build e2e

package conformance

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice.dev/sluice/e2e/stack"
)

// defaults are the flag values this stack needs; flags given on the
// command line win.
var defaults = map[string]string{
	"ingressClass":    stack.IngressClass,
	"enable-alpha":    "true",
	"enable-beta":     "true",
	"cluster-suffix":  "cluster.local",
	"ingressendpoint": "127.0.0.1", // the suite dials it at the gateway Service's nodePorts
	"imagetemplate":   "{{.Name}}", // the pod runner knows images by bare name
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	flag.Parse()
	if err := stack.NeedRoot(); err != nil {
		fmt.Println("conformance: FAIL:", err)
		return 1
	}
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range defaults {
		if !given[name] {
			if err := flag.Set(name, v); err != nil {
				fmt.Println("conformance:", err)
				return 1
			}
		}
	}
	// Passed subtests are only printed in verbose mode; the table needs them.
	if v := flag.Lookup("test.v"); v != nil && v.Value.String() == "false" {
		flag.Set("test.v", "true")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	begin := time.Now()
	opts := stack.Options{
		UnreadyProbePeriod: time.Second, // backends get Ready as soon as they listen
		Envoys:             envInt("SLUICE_CONFORMANCE_ENVOYS"),
		Controllers:        envInt("SLUICE_CONFORMANCE_CONTROLLERS"),
	}
	s, err := stack.Start(ctx, opts)
	if err != nil {
		fmt.Println("conformance: the local stack did not start:", err)
		return 1
	}
	defer s.Stop()
	if !s.SluiceStarted {
		fmt.Println("conformance: Sluice did not start:", s.SluiceSkipReason)
		return 1
	}
	if s.PodsSkipReason != "" {
		fmt.Println("conformance: the pod runner did not start:", s.PodsSkipReason)
		return 1
	}
	startup := time.Since(begin)
	opts = s.Options()
	kc := flag.Lookup("kubeconfig")
	if given["kubeconfig"] && !sameFile(kc.Value.String(), s.Kubeconfig) {
		fmt.Printf("conformance: --kubeconfig=%s is not the stack's (%s)\n", kc.Value, s.Kubeconfig)
		return 1
	}
	flag.Set("kubeconfig", s.Kubeconfig)

	runs, code := runTee(m)
	rep := report{
		Started:        begin.UTC(),
		StackStartup:   seconds(startup),
		Machine:        machine(),
		Envoys:         opts.Envoys,
		Controllers:    opts.Controllers,
		Flags:          flagValues(),
		Runs:           runs,
		ExpectedPerRun: len(suite),
	}
	full := flag.Lookup("test.run").Value.String() == ""
	ok := code == 0 && len(runs) > 0
	fmt.Printf("\nconformance: %d Sluice replica(s), %d Envoy(s), stack up in %.1fs, %d run(s)\n", opts.Controllers, opts.Envoys, rep.StackStartup, len(runs))
	for i := range runs {
		printTable(os.Stdout, i+1, len(runs), runs[i])
		if full && runs[i].Passed != len(suite) {
			ok = false
		}
	}
	if err := rep.save(s.Options().Root); err != nil {
		fmt.Println("conformance: saving results:", err)
	}
	if !ok {
		fmt.Printf("conformance: FAIL: want %d of %d passed in every run\n", len(suite), len(suite))
		return 1
	}
	return 0
}

// runTee runs the tests with stdout copied through a line scanner that
// picks up the "--- PASS/FAIL/SKIP" lines of the suite's tests.
func runTee(m *testing.M) ([]suiteRun, int) {
	orig := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		return nil, m.Run()
	}
	os.Stdout = w
	done := make(chan []suiteRun)
	go func() { done <- scan(io.TeeReader(r, orig)) }()
	code := m.Run()
	os.Stdout = orig
	w.Close()
	runs := <-done
	for i := range runs {
		if i < len(wallTimes) {
			runs[i].Seconds = seconds(wallTimes[i])
		}
	}
	return runs, code
}

type report struct {
	Started        time.Time         `json:"started"`
	StackStartup   float64           `json:"stackStartupSeconds"`
	Machine        map[string]string `json:"machine"`
	Envoys         int               `json:"envoys"`
	Controllers    int               `json:"controllers"`
	Flags          map[string]string `json:"flags"`
	ExpectedPerRun int               `json:"expectedPerRun"`
	Runs           []suiteRun        `json:"runs"`
}

func (r report) save(root string) error {
	dir := filepath.Join(root, "e2e", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(dir, "conformance-"+r.Started.Format("20060102-150405")+".json")
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Println("conformance: results in", p)
	return nil
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(100*time.Millisecond)) / float64(time.Second)
}

func machine() map[string]string {
	m := map[string]string{
		"cpus": strconv.Itoa(runtime.NumCPU()),
		"go":   runtime.Version(),
		"os":   runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			m["memory"] = strings.Join(strings.Fields(strings.TrimPrefix(l, "MemTotal:")), " ")
		}
	}
	return m
}

func flagValues() map[string]string {
	out := map[string]string{}
	for _, n := range []string{"ingressClass", "enable-alpha", "enable-beta", "skip-tests", "cluster-suffix", "ingressendpoint", "imagetemplate", "kubeconfig", "test.count", "test.run"} {
		if f := flag.Lookup(n); f != nil {
			out[n] = f.Value.String()
		}
	}
	return out
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// envInt reads a positive count from the environment; 0 means the stack's default.
func envInt(k string) int {
	n, err := strconv.Atoi(os.Getenv(k))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
