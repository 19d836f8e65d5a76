package main

// The fleet benchmark (-fleet F): what each Envoy costs the controller,
// with F simulated Envoys (e2e/cmd/simenvoy, a process of its own) beside
// the two real ones, all on one controller:
//
//   - F1: the controller's live heap per stream (with the fleet, less
//     without, over F) and its RSS;
//   - F2: a create -> every simulated Envoy holds its route configuration
//     and the real Envoys serve it; CPU per change of the controller and
//     of the simulated fleet;
//   - F3: the same with one simulated Envoy that stopped reading;
//   - F4: the controller restarted -> every simulated Envoy reconnected
//     and holding a change made right after, and the bytes each received;
//   - F5: one more Envoy joining -> it is ready.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
	"sluice.dev/sluice/translator"
)

// fleetRun is one build's figures.
type fleetRun struct {
	Name, Bin string
	Env       []string `json:"env,omitempty"`
	N, F      int
	// F1
	HeapWithout, HeapWith int64 // controller heap in use after a GC
	RSSWithout, RSSWith   int64
	FleetReadyMs          float64 // fleet connected -> every client ready
	// F2 and F3: create -> every (other) simulated Envoy holds it, and the
	// real Envoys serve it.
	HeldMs, HeldFrozenMs     []float64
	ServedMs, ServedFrozenMs []float64
	ControllerCPUPerChangeMs float64
	FleetCPUPerChangeMs      float64
	// F4
	RestartMs     float64
	RestartBytes  int64 // per simulated Envoy, mean, since it reconnected
	RestartChange float64
	// F5
	JoinMs float64

	NotMeasured []string `json:",omitempty"`
}

const fleetListen = "127.0.0.1:18990"

// fleetCreates is how many KIngresses a fleet run creates: creates for
// F2, as many for F3, one for F4.
func fleetCreates(creates int) int { return 2*creates + 1 }

// fleetProc is the simulated fleet's process.
type fleetProc struct{ cmd *exec.Cmd }

func startFleet(root, xds string, f int) (*fleetProc, error) {
	bin := filepath.Join(root, "bin", "simenvoy")
	build := exec.Command("go", "build", "-o", bin, "./e2e/cmd/simenvoy")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("building simenvoy: %w", err)
	}
	cmd := exec.Command(bin, "-xds", xds, "-n", fmt.Sprint(f), "-listen", fleetListen)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &fleetProc{cmd: cmd}
	for range 200 {
		if _, err := p.stats(); err == nil {
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("simenvoy did not answer on %s", fleetListen)
}

func (p *fleetProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
}

func (p *fleetProc) pid() int { return p.cmd.Process.Pid }

type fleetStats struct {
	Clients, Connected, Ready int
	Responses, Bytes, NACKs   int64
}

func (p *fleetProc) call(method, path string, q url.Values, out any) error {
	req, err := http.NewRequest(method, "http://"+fleetListen+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("simenvoy %s: %s", path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (p *fleetProc) stats() (fleetStats, error) {
	var s fleetStats
	return s, p.call("GET", "/stats", nil, &s)
}

// waitFleet polls until ok says the fleet is there, or a deadline.
func waitFleet(p *fleetProc, what string, d time.Duration, ok func(fleetStats) bool) error {
	return workload.Poll(context.Background(), d, func() error {
		s, err := p.stats()
		if err == nil && !ok(s) {
			err = fmt.Errorf("%s: not yet (%+v)", what, s)
		}
		return err
	})
}

// held waits until want simulated Envoys (skip: one left out) hold the
// route configuration; it returns the slowest's time since Expect, as the
// simulated Envoys measured it.
func (p *fleetProc) held(rc string, want int, skip int, d time.Duration) (float64, error) {
	q := url.Values{"type": {resource.RouteType}, "name": {rc}}
	if skip >= 0 {
		q.Set("skip", fmt.Sprint(skip))
	}
	var h struct {
		N         int     `json:"n"`
		SlowestMs float64 `json:"slowest_ms"`
	}
	err := workload.Poll(context.Background(), d, func() error {
		if err := p.call("GET", "/held", q, &h); err != nil {
			return err
		}
		if h.N < want {
			return fmt.Errorf("%s held by %d of %d simulated Envoys", rc, h.N, want)
		}
		return nil
	})
	return h.SlowestMs, err
}

// fleetChange creates KIngress i and returns when every simulated Envoy
// but skip holds its route configuration (first) and the real Envoys
// serve it (second).
func fleetChange(ctx context.Context, st *stack.Stack, kn clientset.Interface, p *fleetProc, i, want, skip int) (held, served float64, err error) {
	rc := translator.IngressRoutes(nsOf(i), svcOf(i))
	if err := p.call("POST", "/expect", url.Values{"type": {resource.RouteType}, "name": {rc}}, nil); err != nil {
		return 0, 0, err
	}
	t := time.Now()
	if _, err := kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Create(ctx, kingress(i), metav1.CreateOptions{}); err != nil {
		return 0, 0, err
	}
	at, err := waitServed(hostOf(i), st.External.HTTP, time.Minute)
	if err != nil {
		return 0, 0, err
	}
	served = ms(at.Sub(t))
	held, err = p.held(rc, want, skip, time.Minute)
	return held, served, err
}

func measureFleet(ctx context.Context, st *stack.Stack, kn clientset.Interface, r *fleetRun, creates int) error {
	n, f := r.N, r.F
	fmt.Printf("== %s (%s): %d KIngresses, %d simulated Envoys beside the 2 real ones\n", r.Name, r.Bin, n, f)
	if err := st.StartGateway(ctx, r.Bin, r.Env...); err != nil {
		return err
	}
	if _, err := waitServed(hostOf(n-1), st.External.HTTP, 10*time.Minute); err != nil {
		return err
	}
	settle(st)
	r.HeapWithout, r.RSSWithout = st.LiveHeap(0), rss(st.Pid("sluice-0"))
	xdsAddr := fmt.Sprintf("127.0.0.1:%d", st.Options().Ports.XDS)
	t := time.Now()
	p, err := startFleet(st.Options().Root, xdsAddr, f)
	if err != nil {
		return err
	}
	defer p.stop()
	if err := waitFleet(p, "every simulated Envoy ready", 10*time.Minute, func(s fleetStats) bool { return s.Ready == f }); err != nil {
		return err
	}
	r.FleetReadyMs = ms(time.Since(t))
	fmt.Printf("   %d simulated Envoys connected and ready in %.0f ms\n", f, r.FleetReadyMs)
	settle(st)
	r.HeapWith, r.RSSWith = st.LiveHeap(0), rss(st.Pid("sluice-0"))
	fmt.Printf("   controller heap %d -> %d MiB (%.2f MiB per stream), RSS %d -> %d MiB\n",
		r.HeapWithout>>20, r.HeapWith>>20, float64(r.HeapWith-r.HeapWithout)/float64(f)/(1<<20), r.RSSWithout>>20, r.RSSWith>>20)

	// F2: changes with every Envoy reading.
	next := n
	cpu0, fcpu0 := cpuMs(st.Pid("sluice-0")), cpuMs(p.pid())
	for range creates {
		held, served, err := fleetChange(ctx, st, kn, p, next, f, -1)
		if err != nil {
			return err
		}
		next++
		r.HeldMs, r.ServedMs = append(r.HeldMs, held), append(r.ServedMs, served)
		time.Sleep(100 * time.Millisecond)
	}
	r.ControllerCPUPerChangeMs = perChange(cpu0, cpuMs(st.Pid("sluice-0")), creates)
	r.FleetCPUPerChangeMs = perChange(fcpu0, cpuMs(p.pid()), creates)
	fmt.Printf("   F2 create -> %d held: p50 %.0f ms, max %.0f ms; real Envoys served p50 %.0f ms\n", f, pct(r.HeldMs, 50), pct(r.HeldMs, 100), pct(r.ServedMs, 50))

	// F3: one simulated Envoy stops reading.
	if err := p.call("POST", "/freeze", url.Values{"i": {"0"}}, nil); err != nil {
		return err
	}
	for range creates {
		held, served, err := fleetChange(ctx, st, kn, p, next, f-1, 0)
		if err != nil {
			return err
		}
		next++
		r.HeldFrozenMs, r.ServedFrozenMs = append(r.HeldFrozenMs, held), append(r.ServedFrozenMs, served)
		time.Sleep(100 * time.Millisecond)
	}
	if err := p.call("POST", "/thaw", url.Values{"i": {"0"}}, nil); err != nil {
		return err
	}
	fmt.Printf("   F3 with one frozen: create -> %d others held p50 %.0f ms, max %.0f ms; real Envoys served p50 %.0f ms\n",
		f-1, pct(r.HeldFrozenMs, 50), pct(r.HeldFrozenMs, 100), pct(r.ServedFrozenMs, 50))

	// F5: one joins.
	var j struct{ I int }
	if err := p.call("POST", "/join", nil, &j); err != nil {
		return err
	}
	err = workload.Poll(ctx, 5*time.Minute, func() error {
		var c struct {
			Ready   bool
			ReadyMs float64 `json:"ready_ms"`
		}
		if err := p.call("GET", "/client", url.Values{"i": {fmt.Sprint(j.I)}}, &c); err != nil {
			return err
		}
		if !c.Ready {
			return fmt.Errorf("the joined Envoy is not ready")
		}
		r.JoinMs = c.ReadyMs
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("   F5 one more Envoy joins: ready in %.0f ms\n", r.JoinMs)

	// F4: the controller restarts under the fleet.
	f++
	t = time.Now()
	if err := st.Restart(ctx, "sluice-0"); err != nil {
		return err
	}
	if err := waitFleet(p, "every simulated Envoy back", 5*time.Minute, func(s fleetStats) bool { return s.Connected == f }); err != nil {
		return err
	}
	held, _, err := fleetChange(ctx, st, kn, p, next, f, -1)
	if err != nil {
		return err
	}
	next++
	r.RestartMs, r.RestartChange = ms(time.Since(t)), held
	var total int64
	for i := range f {
		var c struct{ Bytes int64 }
		if err := p.call("GET", "/client", url.Values{"i": {fmt.Sprint(i)}}, &c); err != nil {
			return err
		}
		total += c.Bytes
	}
	r.RestartBytes = total / int64(f)
	fmt.Printf("   F4 controller restarted -> %d back and holding a new change in %.0f ms, %d bytes each\n", f, r.RestartMs, r.RestartBytes)

	// Put the objects back for the next build.
	return parallel(next-n, func(k int) error {
		return kn.NetworkingV1alpha1().Ingresses(nsOf(n+k)).Delete(ctx, svcOf(n+k), metav1.DeleteOptions{})
	})
}

// perStream is F1: the controller's heap per stream, or -1.
func (r fleetRun) perStream() float64 {
	if r.HeapWith < 0 || r.HeapWithout < 0 {
		return -1
	}
	return float64(r.HeapWith-r.HeapWithout) / float64(r.F) / (1 << 20)
}

// perChange is the CPU time between two readings over n changes, or -1
// when a reading could not be taken.
func perChange(before, after float64, n int) float64 {
	if before < 0 || after < 0 {
		return -1
	}
	return (after - before) / float64(n)
}

// fleetNotMeasured names the readings of r that could not be taken.
func fleetNotMeasured(r fleetRun) []string {
	var m missing
	m.check("controller heap", float64(r.HeapWithout), float64(r.HeapWith))
	m.check("controller RSS", float64(r.RSSWithout), float64(r.RSSWith))
	m.check("CPU per change", r.ControllerCPUPerChangeMs, r.FleetCPUPerChangeMs)
	if len(r.HeldMs) == 0 {
		m = append(m, "F2 changes")
	}
	if len(r.HeldFrozenMs) == 0 {
		m = append(m, "F3 changes")
	}
	return m
}

func reportFleet(runs []fleetRun) {
	head := []string{fmt.Sprintf("N = %d, F = %d", runs[0].N, runs[0].F)}
	for _, r := range runs {
		head = append(head, r.Name)
	}
	readings := func(format string, f func(r fleetRun) []float64) func(r fleetRun) string {
		return func(r fleetRun) string { return cell(format, f(r)...) }
	}
	printTable(head, runs, []tableRow[fleetRun]{
		one("F1 controller heap per Envoy stream", readings("%.2f MiB", func(r fleetRun) []float64 { return []float64{r.perStream()} })),
		one("controller RSS, 2 real Envoys -> with the fleet", readings("%.0f -> %.0f MiB", func(r fleetRun) []float64 {
			return []float64{float64(r.RSSWithout >> 20), float64(r.RSSWith >> 20)} // -1 stays -1
		})),
		one("fleet connected -> every Envoy ready", readings("%.1f s", func(r fleetRun) []float64 { return []float64{r.FleetReadyMs / 1000} })),
		one("F2 create -> every Envoy holds it, p50 / max", readings("%.0f / %.0f ms", func(r fleetRun) []float64 { return []float64{pct(r.HeldMs, 50), pct(r.HeldMs, 100)} })),
		one("...real Envoys serve it, p50 / max", readings("%.0f / %.0f ms", func(r fleetRun) []float64 { return []float64{pct(r.ServedMs, 50), pct(r.ServedMs, 100)} })),
		one("CPU per change: controller / simulated fleet", readings("%.0f / %.0f ms", func(r fleetRun) []float64 { return []float64{r.ControllerCPUPerChangeMs, r.FleetCPUPerChangeMs} })),
		one("F3 one Envoy stopped reading: the others hold it, p50 / max", readings("%.0f / %.0f ms", func(r fleetRun) []float64 { return []float64{pct(r.HeldFrozenMs, 50), pct(r.HeldFrozenMs, 100)} })),
		one("...real Envoys serve it, p50 / max", readings("%.0f / %.0f ms", func(r fleetRun) []float64 { return []float64{pct(r.ServedFrozenMs, 50), pct(r.ServedFrozenMs, 100)} })),
		one("F4 controller restarted -> all back, holding a new change", func(r fleetRun) string {
			return fmt.Sprintf("%.1f s (%d bytes each)", r.RestartMs/1000, r.RestartBytes)
		}),
		one("F5 one Envoy joins -> ready", readings("%.0f ms", func(r fleetRun) []float64 { return []float64{r.JoinMs} })),
	})
}
