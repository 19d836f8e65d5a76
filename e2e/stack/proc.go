package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one child process with its log file. Its pid and start time are
// recorded under pids/ so a later run can kill it if this one crashes.
type proc struct {
	name string
	bin  string
	args []string
	// ready waits until a fresh start serves; Restart uses it again.
	ready func(context.Context, *proc) error
	// optional parts may die (tests kill them on purpose) without failing the stack.
	optional bool
	// halted: a test stopped it (Halt, Restart), so its exit is expected
	halted atomic.Bool
	cmd    *exec.Cmd
	log    *os.File
	done   chan struct{}
	err    error
	pidf   string
}

func (s *Stack) startProc(name, bin string, args ...string) (*proc, error) {
	return s.startProcEnv(name, bin, nil, args...)
}

// startProcEnv is startProc with env added to this process's environment.
func (s *Stack) startProcEnv(name, bin string, env []string, args ...string) (*proc, error) {
	if err := os.MkdirAll(s.path("logs"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.path("pids"), 0o755); err != nil {
		return nil, err
	}
	logPath := s.path("logs", name+".log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.opts.Root
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout = log
	cmd.Stderr = log
	// Own process group so stop reaches its children; die with us if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(log, "# %s %s\n", bin, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, bin: bin, args: args, cmd: cmd, log: log, done: make(chan struct{}), pidf: s.path("pids", name)}
	if err := s.limit(name, cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log.Close()
		return nil, fmt.Errorf("memory limit of %s: %w", name, err)
	}
	if err := writePidFile(p.pidf, cmd.Process.Pid); err != nil {
		s.logf("warning: %v", err)
	}
	s.procs = append(s.procs, p)
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Children that outlived the leader.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	_ = os.Remove(p.pidf)
}

// logTail returns the last lines of a process's log, for error messages.
func (s *Stack) logTail(name string, lines int) string {
	b, err := os.ReadFile(s.path("logs", name+".log"))
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func (s *Stack) procError(p *proc, what string) error {
	return fmt.Errorf("%s: %s exited (%v); last lines of %s:\n%s", what, p.name, p.err,
		s.path("logs", p.name+".log"), s.logTail(p.name, 15))
}

// A pid file holds the pid and its start time (field 22 of /proc/pid/stat),
// so a recycled pid is never mistaken for ours.
func writePidFile(path string, pid int) error {
	st, err := startTime(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(fmt.Sprintf("%d %s\n", pid, st)), 0o644)
}

func startTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", fmt.Errorf("odd /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("odd /proc/%d/stat", pid)
	}
	return f[19], nil
}

// livePid returns the pid in a pid file if that process still runs.
func livePid(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 {
		return 0, false
	}
	st, err := startTime(pid)
	if err != nil || st != f[1] {
		return 0, false
	}
	return pid, true
}

// OwnerPid is the pid of a running stack using stateDir, if any.
func OwnerPid(stateDir string) (int, bool) {
	return livePid(filepath.Join(stateDir, "owner.pid"))
}

func (s *Stack) writeOwner() error {
	if err := os.MkdirAll(s.opts.StateDir, 0o755); err != nil {
		return err
	}
	return writePidFile(s.path("owner.pid"), os.Getpid())
}

// killLeftoverProcs kills processes a crashed run recorded.
func (s *Stack) killLeftoverProcs() error {
	files, err := filepath.Glob(s.path("pids", "*"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if pid, ok := livePid(f); ok {
			s.logf("killing leftover %s (pid %d)", filepath.Base(f), pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

func waitGone(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Process names: etcd, kube-apiserver, kube-controller-manager, sluice-<i>
// (controller replicas), envoy-<i>.
func (s *Stack) find(name string) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("the stack runs no process %q", name)
}

// Pid returns the pid of a process of the stack, or 0 if it is not running.
func (s *Stack) Pid(name string) int {
	p, err := s.find(name)
	if err != nil || p.exited() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends sig to a process of the stack (e.g. SIGKILL to "sluice-0" to
// test failover). Only Sluice and Envoy may die without failing the stack.
func (s *Stack) Kill(name string, sig syscall.Signal) error {
	p, err := s.find(name)
	if err != nil {
		return err
	}
	if p.exited() {
		return fmt.Errorf("%s is not running", name)
	}
	return syscall.Kill(p.cmd.Process.Pid, sig)
}

// Halt stops a process of the stack (SIGTERM, then SIGKILL) for a test of
// its absence, the API server or etcd say: its exit does not fail the
// stack. Restart brings it back.
func (s *Stack) Halt(name string) error {
	p, err := s.find(name)
	if err != nil {
		return err
	}
	p.halted.Store(true)
	p.stop(15 * time.Second)
	return nil
}

// Restart stops a process of the stack (SIGTERM, then SIGKILL) if it runs,
// starts it again with the same arguments and waits until it serves.
func (s *Stack) Restart(ctx context.Context, name string) error {
	old, err := s.find(name)
	if err != nil {
		return err
	}
	old.halted.Store(true)
	old.stop(15 * time.Second)
	s.mu.Lock()
	for i, p := range s.procs {
		if p == old {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			break
		}
	}
	p, err := s.startProc(old.name, old.bin, old.args...)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	p.ready, p.optional = old.ready, old.optional
	if p.ready != nil {
		if err := p.ready(ctx, p); err != nil {
			return err
		}
	}
	go s.watchProc(p)
	return nil
}
