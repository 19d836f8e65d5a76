package stack

import (
	"strings"
	"sync"

	"sluice.dev/sluice/e2e/stack/kubelet"
)

// Memory limits for the stack's own Sluice and Envoy processes
// (Options.MemoryLimits), as their containers would have them: each is
// moved into a cgroup of its own right after it starts.
type memLimits struct {
	mu      sync.Mutex
	l       *kubelet.Limits // made with the first
	limited map[string]*kubelet.Limited
}

// limit puts process name into its cgroup if its kind has a limit.
func (s *Stack) limit(name string, pid int) error {
	kind, _, _ := strings.Cut(name, "-")
	bytes := s.opts.MemoryLimits[kind]
	if bytes <= 0 {
		return nil
	}
	m := &s.limits
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.l == nil {
		l, err := kubelet.NewLimits(s.opts.Bridge + "-limits-")
		if err != nil {
			return err
		}
		m.l, m.limited = l, map[string]*kubelet.Limited{}
	}
	c, err := m.l.Limit(name, pid, bytes)
	if err != nil {
		return err
	}
	m.limited[name] = c
	return nil
}

// Memory is the peak memory of a limited process's cgroup and how many
// times the kernel killed a process in it; ok is false for a process
// without a limit.
func (s *Stack) Memory(name string) (peak int64, oomKills int, ok bool) {
	s.limits.mu.Lock()
	c := s.limits.limited[name]
	s.limits.mu.Unlock()
	if c == nil {
		return 0, 0, false
	}
	return c.Peak(), c.OOMKills(), true
}

// close removes the cgroups once their processes are gone.
func (m *memLimits) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.l != nil {
		m.l.Close()
		m.l, m.limited = nil, nil
	}
}
