package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"sluice.dev/sluice/internal/xdstls"
)

// startGateway runs the Sluice controller replicas and the Envoys, when
// bin/sluice exists. Envoy i gets its bootstrap from controller i mod n.
func (s *Stack) startGateway(ctx context.Context) error {
	p := s.opts.Ports
	s.External = Gateway{HTTP: hostPort("127.0.0.1", p.ExternalHTTP), HTTPS: hostPort("127.0.0.1", p.ExternalHTTPS)}
	s.Internal = Gateway{HTTP: hostPort(s.BridgeIP, p.InternalHTTP), HTTPS: hostPort(s.BridgeIP, p.InternalHTTPS)}
	sluice := s.sluiceBin()
	switch {
	case s.opts.SkipSluice:
		s.SluiceSkipReason = "asked to skip"
	case !exists(sluice):
		s.SluiceSkipReason = sluice + " is missing; build it with: make build"
	case !exists(s.bin("envoy")):
		s.SluiceSkipReason = s.bin("envoy") + " is missing; install it with: hack/install-envoy.sh"
	}
	if s.SluiceSkipReason != "" {
		s.logf("Sluice and Envoy skipped: %s", s.SluiceSkipReason)
		return nil
	}

	// Every replica counts the Envoys of the others for readiness.
	var peers []string
	for i := 0; i < s.opts.Controllers && s.opts.Controllers > 1; i++ {
		peers = append(peers, hostPort("127.0.0.1", p.XDS+i))
	}
	// Profiles for the benchmarks (builds before the flag always served them).
	pprof := hasFlag(sluice, "controller", "pprof")
	for i := 0; i < s.opts.Controllers; i++ {
		args := []string{"controller",
			"--kubeconfig", s.Kubeconfig,
			"--xds-address", hostPort("127.0.0.1", p.XDS+i),
			"--replica-name", fmt.Sprintf("sluice-%d", i),
			"--admin-address", hostPort("127.0.0.1", p.SluiceAdmin+i),
			"--external-http-port", strconv.Itoa(p.ExternalHTTP),
			"--external-https-port", strconv.Itoa(p.ExternalHTTPS),
			"--internal-http-port", strconv.Itoa(p.InternalHTTP),
			"--internal-https-port", strconv.Itoa(p.InternalHTTPS),
		}
		if len(peers) > 0 {
			args = append(args, "--peers", strings.Join(peers, ","))
		}
		if s.opts.XDSTLS {
			f := s.XDSTLSFiles("xds-server")
			args = append(args, "--xds-tls-cert", f.Cert, "--xds-tls-key", f.Key, "--xds-tls-ca", f.CA)
		}
		if pprof {
			args = append(args, "--pprof")
		}
		args = append(args, s.opts.SluiceArgs...)
		pr, err := s.startProcEnv(fmt.Sprintf("sluice-%d", i), sluice, s.opts.SluiceEnv, args...)
		if err != nil {
			return err
		}
		xds := hostPort("127.0.0.1", p.XDS+i)
		pr.optional = true
		pr.ready = func(ctx context.Context, pr *proc) error { return s.waitTCP(ctx, pr, xds, 60*time.Second) }
		if err := pr.ready(ctx, pr); err != nil {
			return err
		}
		go s.watchProc(pr)
		s.logf("sluice-%d serving xDS on 127.0.0.1:%d", i, p.XDS+i)
	}

	// The Envoys start together, as a DaemonSet's do.
	var g errgroup.Group
	for i := 0; i < s.opts.Envoys; i++ {
		// Every replica is in the bootstrap, so an Envoy whose replica dies
		// reconnects to another.
		replicas := []int{i % s.opts.Controllers}
		for j := 0; j < s.opts.Controllers; j++ {
			if j != i%s.opts.Controllers {
				replicas = append(replicas, j)
			}
		}
		g.Go(func() error {
			_, err := s.startEnvoy(ctx, fmt.Sprintf("envoy-%d", i), i, replicas)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	s.envoys = s.opts.Envoys
	s.SluiceStarted = true
	return nil
}

// startEnvoy runs an Envoy with admin port EnvoyAdmin+i whose bootstrap
// lists the given controller replicas, in that order, and waits until it
// is ready.
func (s *Stack) startEnvoy(ctx context.Context, name string, i int, replicas []int, extra ...string) (*proc, error) {
	p := s.opts.Ports
	var xdsAddrs []string
	for _, j := range replicas {
		xdsAddrs = append(xdsAddrs, hostPort("127.0.0.1", p.XDS+j))
	}
	bootstrap := s.path(name + ".yaml")
	args := append([]string{"bootstrap",
		"--xds-address", strings.Join(xdsAddrs, ","),
		"--node-id", name,
		"--node-cluster", ExternalGWName,
		"--admin-address", hostPort("127.0.0.1", p.EnvoyAdmin+i),
	}, append(slices.Clone(s.opts.BootstrapArgs), extra...)...)
	if s.opts.XDSTLS {
		f := s.XDSTLSFiles("xds-client")
		args = append(args, "--xds-tls-cert", f.Cert, "--xds-tls-key", f.Key, "--xds-tls-ca", f.CA, "--xds-tls-sds-dir", s.path())
	}
	out, err := exec.CommandContext(ctx, s.sluiceBin(), args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("sluice bootstrap for %s: %w", name, err)
	}
	if err := os.WriteFile(bootstrap, out, 0o644); err != nil {
		return nil, err
	}
	// Distinct base ids keep the Envoys' shared memory regions apart.
	s.mu.Lock()
	// Access log lines reach the log within a second, as the chart has it.
	pr, err := s.startProc(name, s.bin("envoy"), "-c", bootstrap, "--base-id", strconv.Itoa(7300+i),
		"--log-level", "info", "--file-flush-interval-msec", "1000")
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// /ready answers 200 once Envoy has its first listeners and clusters.
	admin := fmt.Sprintf("http://%s/ready", hostPort("127.0.0.1", p.EnvoyAdmin+i))
	pr.optional = true
	pr.ready = func(ctx context.Context, pr *proc) error {
		return s.waitHTTP(ctx, pr, pr.name, admin, nil, "", 60*time.Second)
	}
	if err := pr.ready(ctx, pr); err != nil {
		return nil, err
	}
	go s.watchProc(pr)
	s.logf("%s ready (admin http://127.0.0.1:%d, xDS %s)", name, p.EnvoyAdmin+i, strings.Join(xdsAddrs, ","))
	return pr, nil
}

// StartEnvoy runs one more Envoy, connected only to the given controller
// replicas (to pin it to one, say), and returns its admin address and a
// function that stops it. It shares the listener ports of the others.
func (s *Stack) StartEnvoy(ctx context.Context, name string, replicas ...int) (admin string, stop func(), err error) {
	return s.StartEnvoyWith(ctx, name, nil, replicas...)
}

// StartEnvoyWith is StartEnvoy with more `sluice bootstrap` flags for this
// Envoy (--max-heap-bytes=...).
func (s *Stack) StartEnvoyWith(ctx context.Context, name string, bootstrapArgs []string, replicas ...int) (admin string, stop func(), err error) {
	s.mu.Lock()
	i := s.envoys
	s.envoys++
	s.mu.Unlock()
	pr, err := s.startEnvoy(ctx, name, i, replicas, bootstrapArgs...)
	if err != nil {
		return "", nil, err
	}
	return hostPort("127.0.0.1", s.opts.Ports.EnvoyAdmin+i), func() {
		pr.stop(10 * time.Second)
		s.mu.Lock()
		defer s.mu.Unlock()
		for k, q := range s.procs {
			if q == pr {
				s.procs = append(s.procs[:k], s.procs[k+1:]...)
				break
			}
		}
	}, nil
}

func (s *Stack) sluiceBin() string {
	if s.opts.SluiceBin != "" {
		return s.opts.SluiceBin
	}
	return s.bin("sluice")
}

// StartGateway starts the controller replicas and Envoys with the sluice
// binary bin, on a stack started with SkipSluice or after StopGateway: a
// benchmark compares two builds on one stack and one set of objects.
func (s *Stack) StartGateway(ctx context.Context, bin string, env ...string) error {
	s.opts.SkipSluice, s.opts.SluiceBin, s.opts.SluiceEnv, s.SluiceSkipReason = false, bin, env, ""
	return s.startGateway(ctx)
}

// StopGateway stops every controller replica and Envoy.
func (s *Stack) StopGateway() {
	s.mu.Lock()
	var stop, keep []*proc
	for _, p := range s.procs {
		if strings.HasPrefix(p.name, "sluice-") || strings.HasPrefix(p.name, "envoy-") {
			stop = append(stop, p)
		} else {
			keep = append(keep, p)
		}
	}
	s.procs = keep
	s.envoys = 0
	s.SluiceStarted = false
	s.mu.Unlock()
	for _, p := range stop {
		p.stop(10 * time.Second)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// hasFlag reports whether `bin cmd -h` lists -flag.
func hasFlag(bin, cmd, flag string) bool {
	out, _ := exec.Command(bin, cmd, "-h").CombinedOutput()
	return strings.Contains(string(out), "  -"+flag+"\n") || strings.Contains(string(out), "  -"+flag+" ")
}

// XDSTLSFiles are the stack's PEM files for xDS mutual TLS: "xds-server"
// (the controllers') or "xds-client" (the Envoys'), and the stack's CA.
func (s *Stack) XDSTLSFiles(name string) xdstls.Files {
	return xdstls.Files{Cert: s.path("pki", name+".crt"), Key: s.path("pki", name+".key"), CA: s.path("pki", "ca.crt")}
}
