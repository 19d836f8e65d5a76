package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Restart back-off: shorter than the kubelet's 10s..5m so crash loops in
// tests recover quickly, same doubling.
const (
	restartBackoffBase  = time.Second
	restartBackoffMax   = 30 * time.Second
	restartBackoffReset = time.Minute
)

// containerRunner runs one container as a process in the pod's network
// namespace, restarts it per the pod's restartPolicy and runs its probes.
type containerRunner struct {
	k      *kubelet
	pod    *corev1.Pod // snapshot taken when the pod started
	spec   *corev1.Container
	netns  string
	podIP  string
	vols   *podVolumes
	notify func()
	log    *zap.Logger

	stop chan time.Duration // grace period; buffered
	done chan struct{}

	mu sync.Mutex
	st containerState
}

// containerState is what the status of the container is built from.
type containerState struct {
	state     corev1.ContainerState
	lastState corev1.ContainerState
	ready     bool
	started   bool
	restarts  int32
	id        string
	imageID   string
}

func newContainerRunner(k *kubelet, pod *corev1.Pod, c *corev1.Container, netns, podIP string, vols *podVolumes, notify func()) *containerRunner {
	return &containerRunner{
		k: k, pod: pod, spec: c, netns: netns, podIP: podIP, vols: vols, notify: notify,
		log:  k.log.With(zap.String("pod", pod.Namespace+"/"+pod.Name), zap.String("container", c.Name)),
		stop: make(chan time.Duration, 1),
		done: make(chan struct{}),
		st: containerState{state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "ContainerCreating"}}},
	}
}

func (r *containerRunner) snapshot() containerState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

func (r *containerRunner) update(f func(*containerState)) {
	r.mu.Lock()
	f(&r.st)
	r.mu.Unlock()
	r.notify()
}

// requestStop asks the runner to stop its process with the given grace
// period and not restart it. Later calls are no-ops.
func (r *containerRunner) requestStop(grace time.Duration) {
	select {
	case r.stop <- grace:
	default:
	}
}

func (r *containerRunner) logPath() string {
	return filepath.Join(r.k.cfg.LogDir, fmt.Sprintf("%s_%s_%s.log", r.pod.Namespace, r.pod.Name, r.spec.Name))
}

func (r *containerRunner) terminationGrace(p *corev1.Probe) time.Duration {
	if p != nil && p.TerminationGracePeriodSeconds != nil {
		return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	if g := r.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// attempt is how one run of the process ended.
type attempt struct {
	startErr bool // the process could not be started at all
	exitCode int32
	stopped  bool // stop was requested; do not restart
	ran      time.Duration
}

func (r *containerRunner) run(ctx context.Context) {
	defer close(r.done)
	backoff := restartBackoffBase
	ranBefore := false
	for {
		if ranBefore {
			r.update(func(st *containerState) { st.restarts++ })
		}
		a := r.runOnce(ctx)
		ranBefore = ranBefore || !a.startErr
		if a.stopped {
			return
		}
		policy := r.pod.Spec.RestartPolicy
		restart := a.startErr || willRestart(policy, a.exitCode)
		if !restart {
			return
		}
		if a.ran >= restartBackoffReset {
			backoff = restartBackoffBase
		}
		if !a.startErr {
			r.update(func(st *containerState) {
				st.lastState, st.state = st.state, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason:  "CrashLoopBackOff",
					Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", backoff, r.spec.Name, r.pod.Name, r.pod.Namespace, r.pod.UID),
				}}
			})
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-r.stop:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, restartBackoffMax)
	}
}

// argv resolves the image and the container's command and args to the argv
// to run inside the namespace.
func (r *containerRunner) argv(vars map[string]string) ([]string, string, error) {
	bin, err := r.k.resolveImage(r.spec.Image)
	if err != nil {
		return nil, "", err
	}
	args := make([]string, 0, len(r.spec.Command)+len(r.spec.Args)+1)
	if len(r.spec.Command) == 0 {
		args = append(args, bin)
	} else {
		exe, err := resolveCommand(expand(r.spec.Command[0], vars), bin, r.spec.Image)
		if err != nil {
			return nil, "", err
		}
		args = append(args, exe)
		for _, a := range r.spec.Command[1:] {
			args = append(args, expand(a, vars))
		}
	}
	for _, a := range r.spec.Args {
		args = append(args, expand(a, vars))
	}
	return args, bin, nil
}

// resolveCommand maps a container command to a host executable. The image's
// own entrypoint (e.g. /ko-app/runtime for image runtime) is the image's
// binary; anything else must exist on the host.
func resolveCommand(cmd0, imageBin, image string) (string, error) {
	base := path.Base(cmd0)
	if base == filepath.Base(imageBin) {
		return imageBin, nil
	}
	for _, c := range imageCandidates(image) {
		if base == path.Base(c) {
			return imageBin, nil
		}
	}
	if filepath.IsAbs(cmd0) {
		if isExecutable(cmd0) {
			return cmd0, nil
		}
		return "", fmt.Errorf("command %s does not exist on this host", cmd0)
	}
	return exec.LookPath(cmd0)
}

func (r *containerRunner) waiting(reason string, err error) attempt {
	r.log.Warn("container cannot start", zap.String("reason", reason), zap.Error(err))
	r.update(func(st *containerState) {
		st.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
		st.ready, st.started = false, false
	})
	return attempt{startErr: true}
}

// runOnce starts the process and supervises it until it exits or a stop is
// requested.
func (r *containerRunner) runOnce(ctx context.Context) attempt {
	uid, gid, groups := containerUser(r.pod, r.spec, filepath.IsAbs(r.spec.Image))
	home := "/root"
	if uid > 0 {
		home = "/"
	}
	env, vars, err := containerEnv(ctx, r.k.client, r.pod, r.spec, r.podIP, r.k.hostIP, home, r.k.podServices(r.pod))
	if err != nil {
		return r.waiting("CreateContainerConfigError", err)
	}
	argv, bin, err := r.argv(vars)
	if err != nil {
		return r.waiting("ErrImagePull", err)
	}
	mounts, err := r.vols.mounts(ctx, r.spec)
	if err != nil {
		return r.waiting("CreateContainerConfigError", err)
	}
	sb := sandbox{mounts: mounts, bin: bin, uid: uid, gid: gid, groups: groups, hostname: podHostname(r.pod)}
	if sb.entrypoint(argv) {
		if err := r.vols.mountpoint(koEntrypoint, true); err != nil {
			return r.waiting("RunContainerError", err)
		}
	}
	var cg *containerCgroup
	if r.k.cgroups != nil {
		if cg, err = r.k.cgroups.create(r.netns+"-"+r.spec.Name, r.spec.Resources); err != nil {
			return r.waiting("RunContainerError", fmt.Errorf("cgroup: %w", err))
		}
		defer cg.remove()
		sb.cgroups = cg.views()
	}
	logf, err := os.OpenFile(r.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return r.waiting("RunContainerError", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s sluice kubelet: starting %q in netns %s as uid %d\n", time.Now().UTC().Format(time.RFC3339), argv, r.netns, uid)

	cmd := exec.Command("ip", append([]string{"netns", "exec", r.netns}, sb.containerArgv(argv)...)...)
	cmd.Env = env
	cmd.Dir = "/"
	if wd := r.spec.WorkingDir; wd != "" {
		if st, err := os.Stat(wd); err == nil && st.IsDir() {
			cmd.Dir = wd
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so stopping reaches children too; and die with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	sandboxed, signal, err := os.Pipe()
	if err != nil {
		return r.waiting("RunContainerError", err)
	}
	defer sandboxed.Close()
	cmd.ExtraFiles = []*os.File{signal} // startedFD
	err = cmd.Start()
	signal.Close()
	if err != nil {
		return r.waiting("RunContainerError", err)
	}
	pid := cmd.Process.Pid
	if cg != nil {
		// `ip netns exec`, the script and the process are one pid: it
		// enters its cgroups before the script is done.
		if err := cg.enter(pid); err != nil {
			r.log.Warn("entering the container's cgroups", zap.Error(err))
		}
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	// Running (and Ready, without a readiness probe) once the sandbox is
	// built and the process is being exec'd, as a runtime reports it.
	_ = sandboxed.SetReadDeadline(time.Now().Add(2 * time.Minute))
	if _, err := sandboxed.Read(make([]byte, 1)); err != nil {
		r.log.Warn("the sandbox did not say it was built", zap.Error(err))
	}
	startedAt := time.Now()
	r.log.Info("container started", zap.Int("pid", pid), zap.Strings("argv", argv))

	pr := &prober{podIP: r.podIP, netns: r.netns, container: r.spec, env: env,
		execArgv: func(c []string) ([]string, error) {
			exe, err := resolveCommand(c[0], bin, r.spec.Image)
			if err != nil {
				return nil, err
			}
			return sb.argv(append([]string{exe}, c[1:]...)), nil
		}}
	fast := r.k.cfg.UnreadyProbePeriod
	startup := newProbeState(r.spec.StartupProbe, startedAt, fast)
	liveness := newProbeState(r.spec.LivenessProbe, startedAt, 0)
	readiness := newProbeState(r.spec.ReadinessProbe, startedAt, fast)
	started := startup == nil

	r.update(func(st *containerState) {
		st.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(startedAt).Rfc3339Copy()}}
		st.started = started
		st.ready = started && readiness == nil
		st.id = fmt.Sprintf("sluice://%s/%s/%d", r.netns, r.spec.Name, pid)
		st.imageID = "file://" + bin
	})

	kill := func(grace time.Duration) {
		// The preStop hook runs first, within the grace period; SIGTERM
		// follows (with at least 2s, as the kubelet gives).
		deadline := time.Now().Add(grace)
		r.preStop(ctx, pr, grace, exited)
		grace = max(time.Until(deadline), 2*time.Second)
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-exited:
		case <-t.C:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-exited
		}
		// Stragglers in the group that ignored SIGTERM.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	finish := func(a attempt) attempt {
		code := int32(cmd.ProcessState.ExitCode())
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int32(ws.Signal())
		}
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		r.log.Info("container exited", zap.Int32("exitCode", code))
		fmt.Fprintf(logf, "=== %s sluice kubelet: exited with code %d\n", time.Now().UTC().Format(time.RFC3339), code)
		r.update(func(st *containerState) {
			st.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: code, Reason: reason, StartedAt: metav1.NewTime(startedAt).Rfc3339Copy(),
				FinishedAt: metav1.Now().Rfc3339Copy(), ContainerID: st.id,
			}}
			st.ready, st.started = false, false
		})
		a.exitCode = code
		a.ran = time.Since(startedAt)
		return a
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var due []*probeState
		if started {
			due = []*probeState{liveness, readiness}
		} else {
			due = []*probeState{startup}
		}
		next := time.Now().Add(time.Hour)
		for _, p := range due {
			if p != nil && p.next.Before(next) {
				next = p.next
			}
		}
		timer.Reset(time.Until(next))

		select {
		case <-exited:
			return finish(attempt{})
		case grace := <-r.stop:
			kill(grace)
			return finish(attempt{stopped: true})
		case <-ctx.Done():
			kill(2 * time.Second)
			return finish(attempt{stopped: true})
		case <-timer.C:
		}

		now := time.Now()
		if !started {
			if startup.due(now) {
				switch startup.observe(pr.run(ctx, startup.probe), r.log, "startup") {
				case probeSucceeded:
					started = true
					// Liveness and readiness start counting from here.
					liveness.reset(now)
					readiness.reset(now)
					r.update(func(st *containerState) {
						st.started = true
						st.ready = readiness == nil
					})
				case probeFailed:
					kill(r.terminationGrace(startup.probe))
					return finish(attempt{})
				}
			}
			continue
		}
		if liveness.due(now) && liveness.observe(pr.run(ctx, liveness.probe), r.log, "liveness") == probeFailed {
			kill(r.terminationGrace(liveness.probe))
			return finish(attempt{})
		}
		if readiness.due(now) {
			switch readiness.observe(pr.run(ctx, readiness.probe), r.log, "readiness") {
			case probeSucceeded:
				r.update(func(st *containerState) { st.ready = true })
			case probeFailed:
				r.update(func(st *containerState) { st.ready = false })
			}
		}
	}
}

// preStop runs the container's preStop hook, if any, bounded by grace and
// by the process exiting.
func (r *containerRunner) preStop(ctx context.Context, pr *prober, grace time.Duration, exited <-chan struct{}) {
	h := r.spec.Lifecycle
	if h == nil || h.PreStop == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		ps := h.PreStop
		switch {
		case ps.Sleep != nil:
			select {
			case <-time.After(time.Duration(ps.Sleep.Seconds) * time.Second):
			case <-ctx.Done():
			}
			done <- nil
		default:
			// Exec, HTTPGet and TCPSocket hooks are what probes run; their
			// time is the grace period's.
			p := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: ps.Exec, HTTPGet: ps.HTTPGet, TCPSocket: ps.TCPSocket},
				TimeoutSeconds: int32(max(grace/time.Second, 1))}
			done <- pr.run(ctx, p)
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			r.log.Info("preStop hook failed", zap.Error(err))
		}
	case <-exited:
	case <-ctx.Done():
		r.log.Info("preStop hook did not finish within the grace period")
	}
}

// probeState counts consecutive results of one probe.
type probeState struct {
	probe     *corev1.Probe
	next      time.Time
	successes int32
	failures  int32
	result    *bool // last settled result, nil before any
	// fast, if set, is the period while the probe has not succeeded.
	fast time.Duration
}

type probeChange int

const (
	probeUnchanged probeChange = iota
	probeSucceeded
	probeFailed
)

func newProbeState(p *corev1.Probe, start time.Time, fast time.Duration) *probeState {
	if p == nil {
		return nil
	}
	s := &probeState{probe: p, fast: fast}
	s.reset(start)
	return s
}

func (s *probeState) reset(now time.Time) {
	if s == nil {
		return
	}
	s.next = now.Add(time.Duration(s.probe.InitialDelaySeconds) * time.Second)
	s.successes, s.failures, s.result = 0, 0, nil
}

func (s *probeState) due(now time.Time) bool {
	return s != nil && !now.Before(s.next)
}

func (s *probeState) period() time.Duration {
	if s.probe.PeriodSeconds > 0 {
		return time.Duration(s.probe.PeriodSeconds) * time.Second
	}
	return 10 * time.Second
}

// observe records one result and reports when the settled result flips:
// successThreshold consecutive successes, or failureThreshold failures.
func (s *probeState) observe(err error, log *zap.Logger, kind string) probeChange {
	change := s.count(err, log, kind)
	period := s.period()
	if s.fast > 0 && s.fast < period && (s.result == nil || !*s.result) {
		period = s.fast
	}
	s.next = time.Now().Add(period)
	return change
}

func (s *probeState) count(err error, log *zap.Logger, kind string) probeChange {
	successT, failureT := s.probe.SuccessThreshold, s.probe.FailureThreshold
	if successT <= 0 {
		successT = 1
	}
	if failureT <= 0 {
		failureT = 3
	}
	if err == nil {
		s.successes++
		s.failures = 0
		if s.successes >= successT && (s.result == nil || !*s.result) {
			ok := true
			s.result = &ok
			return probeSucceeded
		}
		return probeUnchanged
	}
	if !errors.Is(err, context.Canceled) {
		log.Debug(kind+" probe failed", zap.Error(err))
	}
	s.failures++
	s.successes = 0
	if s.failures >= failureT && (s.result == nil || *s.result) {
		ok := false
		s.result = &ok
		if kind != "readiness" || s.failures == failureT {
			log.Info(kind+" probe failed", zap.Error(err))
		}
		return probeFailed
	}
	return probeUnchanged
}
