// Package stack runs a small real Kubernetes control plane on this machine
// (etcd, kube-apiserver, kube-controller-manager, all on loopback), a bridge
// for per-pod network namespaces, the pod runner, Sluice and Envoy. The
// stack command (e2e/cmd/stack) and the e2e tests share it.
//
// In an e2e package, its test files under the e2e build tag:
//
//	func TestMain(m *testing.M) {
//		if err := stack.NeedRoot(); err != nil {
//			fmt.Println("FAIL:", err)
//			os.Exit(1)
//		}
//		// Reuses a stack from `stack up -background` when one runs.
//		s, err := stack.StartOrAttach(context.Background(), stack.Options{Controllers: 2, Envoys: 2})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		s.Stop() // does nothing for an attached stack
//		os.Exit(code)
//	}
//
// The stack needs root (bridge, network namespaces) and the binaries from
// hack/build-tools.sh and hack/install-envoy.sh in bin/.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Names the rest of the project relies on.
const (
	NodeName       = "sluice-node"
	IngressClass   = "sluice.ingress.networking.knative.dev"
	SystemNS       = "knative-serving"
	TestNS         = "serving-tests"
	ExternalGWName = "sluice-gateway"
	InternalGWName = "sluice-internal"
)

// Ports are all bound to 127.0.0.1 (the internal gateway ports on the bridge
// IP). Replica i of the controller uses XDS+i and SluiceAdmin+i; Envoy i
// uses EnvoyAdmin+i.
type Ports struct {
	Etcd, EtcdPeer               int
	APIServer, ControllerManager int
	XDS, SluiceAdmin             int
	EnvoyAdmin                   int
	ExternalHTTP, ExternalHTTPS  int
	InternalHTTP, InternalHTTPS  int
	Kubelet                      int // the pod runner's kubelet API, on the bridge IP
}

// DefaultPorts keeps clear of the usual Kubernetes and Envoy defaults so a
// real cluster or a developer's Envoy on the same machine does not clash.
var DefaultPorts = Ports{
	Etcd: 23790, EtcdPeer: 23800,
	APIServer: 16443, ControllerManager: 17257,
	XDS: 18000, SluiceAdmin: 19000,
	EnvoyAdmin:   19901,
	ExternalHTTP: 31080, ExternalHTTPS: 31443,
	InternalHTTP: 80, InternalHTTPS: 443,
	Kubelet: 10250,
}

// Options configure Start. Zero values get defaults.
type Options struct {
	Root        string // repository root; found from the working directory
	StateDir    string // default Root/.stack
	BinDir      string // default Root/bin
	Bridge      string // default sluice0
	Subnet      string // pod subnet, default 10.213.7.0/24; the bridge takes .1
	ServiceCIDR string // ClusterIP range, default 10.213.96.0/20 (never routed)
	Ports       Ports  // default DefaultPorts
	Envoys      int    // default 1
	Controllers int    // Sluice controller replicas, default 1
	SkipSluice  bool   // do not start Sluice and Envoy even if bin/sluice exists
	// Chart leaves Sluice to the Helm chart (implies SkipSluice): the stack
	// creates no gateway Services of its own and points no pod at the host
	// for them; the chart's Services and pods take their place.
	Chart     bool
	SluiceBin string // the sluice binary, default BinDir/sluice
	SkipPods  bool   // do not start the pod runner
	// Serving installs Knative Serving (hack/build-serving.sh builds it)
	// once Sluice runs (or, with Chart, before the chart), with Sluice as
	// its ingress.
	Serving    bool
	SluiceArgs []string
	// XDSTLS makes xDS mutual TLS: the controllers get --xds-tls-* and the
	// Envoys' bootstraps a client certificate, all from the stack's CA
	// (XDSTLSFiles).
	XDSTLS bool
	// BootstrapArgs are added to `sluice bootstrap` for every Envoy
	// (--max-connections=...).
	BootstrapArgs []string
	// SluiceEnv is added to the controllers' environment (GOMEMLIMIT=...).
	SluiceEnv []string
	// MemoryLimits bounds the memory of the stack's own processes by kind
	// ("sluice", "envoy") in bytes, in a cgroup each (limits.go).
	MemoryLimits map[string]int64
	// Images maps pod image names to executables for the pod runner; nil
	// builds the Knative conformance test images into BinDir/images.
	Images map[string]string
	// UnreadyProbePeriod is passed to the pod runner (kubelet.Config): it
	// re-probes pods that are not ready yet this often instead of waiting a
	// full periodSeconds. Zero keeps the kubelet's behaviour.
	UnreadyProbePeriod time.Duration
	Log                io.Writer // progress messages; default os.Stderr
}

// Gateway holds host:port addresses of one visibility.
type Gateway struct{ HTTP, HTTPS string }

// Stack is a running stack. Stop tears all of it down.
type Stack struct {
	opts       Options
	Kubeconfig string
	RESTConfig *rest.Config
	Client     kubernetes.Interface
	BridgeIP   string
	// External is reached from this host; pods reach it at BridgeIP with
	// the same ports. Internal (ClusterLocal) listens on the bridge IP.
	External, Internal Gateway
	SluiceStarted      bool
	SluiceSkipReason   string
	PodsSkipReason     string

	mu     sync.Mutex
	procs  []*proc
	envoys int                // Envoys started, StartEnvoy's too: the next one's admin port
	limits memLimits          // MemoryLimits' cgroups
	cancel context.CancelFunc // stops node heartbeats and the pod runner
	bg     sync.WaitGroup
	bgErr  chan error // a background part (pod runner, a process) failed
	bridge bool
	// attached stacks belong to another process; Stop leaves them alone.
	attached bool
	// stopping is set once Stop begins, so exits after it are not failures.
	stopping atomic.Bool
}

func (o *Options) setDefaults() error {
	if o.Chart {
		o.SkipSluice = true
	}
	if o.Root == "" {
		r, err := FindRoot()
		if err != nil {
			return err
		}
		o.Root = r
	}
	if o.StateDir == "" {
		o.StateDir = filepath.Join(o.Root, ".stack")
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Join(o.Root, "bin")
	}
	if o.Bridge == "" {
		o.Bridge = "sluice0"
	}
	if o.Subnet == "" {
		o.Subnet = "10.213.7.0/24"
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = "10.213.96.0/20"
	}
	if o.Ports == (Ports{}) {
		o.Ports = DefaultPorts
	}
	if o.Envoys <= 0 {
		o.Envoys = 1
	}
	if o.Controllers <= 0 {
		o.Controllers = 1
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	return nil
}

// FindRoot walks up from the working directory to the sluice module root.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module sluice.dev/sluice\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the sluice repository (no go.mod of module sluice.dev/sluice above the working directory)")
		}
		dir = parent
	}
}

func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.opts.Log, "stack: "+format+"\n", args...)
}

func (s *Stack) path(elem ...string) string {
	return filepath.Join(append([]string{s.opts.StateDir}, elem...)...)
}

func (s *Stack) bin(name string) string { return filepath.Join(s.opts.BinDir, name) }

// Options returns the options the stack runs with, defaults filled in.
func (s *Stack) Options() Options { return s.opts }

// Start cleans up what a previous crashed run left, then brings the whole
// stack up. On failure everything started so far is stopped again.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	s := &Stack{opts: opts, bgErr: make(chan error, 16)}
	if err := s.checkPrereqs(); err != nil {
		return nil, err
	}
	if pid, ok := OwnerPid(opts.StateDir); ok && pid != os.Getpid() {
		return nil, fmt.Errorf("a stack is already running (pid %d) with state in %s; stop it first (go run ./e2e/cmd/stack down) or use Attach", pid, opts.StateDir)
	}
	if err := s.cleanLeftovers(); err != nil {
		return nil, fmt.Errorf("cleaning up a previous run: %w", err)
	}
	if err := s.checkPorts(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.logf("start failed: %v; tearing down", err)
			s.Stop()
		}
	}()
	start := time.Now()
	if err := s.writeOwner(); err != nil {
		return nil, err
	}
	if err := s.setupBridge(); err != nil {
		return nil, err
	}
	if err := s.startKube(ctx); err != nil {
		return nil, err
	}
	if err := s.bootstrapCluster(ctx); err != nil {
		return nil, err
	}
	bgCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.startClusterNet(bgCtx); err != nil {
		return nil, err
	}
	if err := s.registerNode(ctx, bgCtx); err != nil {
		return nil, err
	}
	if err := s.startPodRunner(bgCtx); err != nil {
		return nil, err
	}
	if err := s.startGateway(ctx); err != nil {
		return nil, err
	}
	if s.opts.Serving {
		// With Chart, Sluice comes later: helm install onto the stack.
		if (!s.SluiceStarted && !s.opts.Chart) || s.PodsSkipReason != "" {
			return nil, fmt.Errorf("Knative Serving needs Sluice and the pod runner (%s%s)", s.SluiceSkipReason, s.PodsSkipReason)
		}
		if err := s.installServing(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.writeState(); err != nil {
		return nil, err
	}
	s.logf("up in %s", time.Since(start).Round(100*time.Millisecond))
	return s, nil
}

// Failed delivers an error when a part of the running stack dies.
func (s *Stack) Failed() <-chan error { return s.bgErr }

func (s *Stack) fail(err error) {
	select {
	case s.bgErr <- err:
	default:
	}
}

// Stop stops every process, the pod runner and heartbeats, removes the pod
// network namespaces and the bridge, and the stack's state except logs.
// It is safe to call more than once.
func (s *Stack) Stop() error {
	if s.attached {
		return nil
	}
	s.stopping.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	var errs []error
	// Gateway first, the API server late: controllers exit cleanly while it is up.
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].stop(15 * time.Second)
		if s.procs[i].name == "kube-controller-manager" {
			// Pods and heartbeats use the API server until they end.
			s.bg.Wait()
		}
	}
	s.bg.Wait()
	s.procs = nil
	s.limits.close()
	if err := s.removePodNetns(); err != nil {
		errs = append(errs, err)
	}
	if s.bridge {
		if err := s.removeBridge(); err != nil {
			errs = append(errs, err)
		}
		s.bridge = false
	}
	if err := s.removeState(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeState deletes everything under the state dir but the logs.
func (s *Stack) removeState() error {
	entries, err := os.ReadDir(s.opts.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Name() == "logs" {
			continue
		}
		if err := os.RemoveAll(s.path(e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Summary tells a user how to use the running stack.
func (s *Stack) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "export KUBECONFIG=%s\n", s.Kubeconfig)
	fmt.Fprintf(&b, "API server:        https://127.0.0.1:%d (kubectl get ns,nodes)\n", s.opts.Ports.APIServer)
	fmt.Fprintf(&b, "pod subnet:        %s on bridge %s (host side %s)\n", s.opts.Subnet, s.opts.Bridge, s.BridgeIP)
	if !s.opts.Chart {
		fmt.Fprintf(&b, "external gateway:  http://%s  https://%s  (pods: %s:%d)\n", s.External.HTTP, s.External.HTTPS, s.BridgeIP, s.opts.Ports.ExternalHTTP)
		fmt.Fprintf(&b, "internal gateway:  http://%s  https://%s  (ClusterLocal, on the bridge)\n", s.Internal.HTTP, s.Internal.HTTPS)
	}
	switch {
	case s.opts.Chart:
		fmt.Fprintf(&b, "Sluice:            from the Helm chart: helm install sluice deploy/helm/sluice -n %s (README: Install on the local stack)\n", SystemNS)
	case s.SluiceStarted:
		for i := 0; i < s.opts.Controllers; i++ {
			fmt.Fprintf(&b, "sluice-%d:          xds 127.0.0.1:%d admin http://127.0.0.1:%d\n", i, s.opts.Ports.XDS+i, s.opts.Ports.SluiceAdmin+i)
		}
		for i := 0; i < s.opts.Envoys; i++ {
			fmt.Fprintf(&b, "envoy-%d:           admin http://127.0.0.1:%d\n", i, s.opts.Ports.EnvoyAdmin+i)
		}
	default:
		fmt.Fprintf(&b, "Sluice/Envoy:      skipped (%s)\n", s.SluiceSkipReason)
	}
	if s.PodsSkipReason != "" {
		fmt.Fprintf(&b, "pod runner:        skipped (%s)\n", s.PodsSkipReason)
	} else {
		fmt.Fprintf(&b, "run a backend:     kubectl -n %s run hello --image=runtime --env=PORT=8080 --port=8080 && kubectl -n %s expose pod hello --port=80 --target-port=8080\n", TestNS, TestNS)
	}
	fmt.Fprintf(&b, "logs:              %s\n", s.path("logs"))
	return b.String()
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }
