package kubelet

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Limits gives processes that run outside pods (the stack's own Sluice and
// Envoys, for a benchmark) the memory limit a container would have, in
// cgroups of their own next to the pod runner's.
type Limits struct{ cg *cgroups }

// Limited is one process's cgroup.
type Limited struct{ c *containerCgroup }

// NewLimits prepares the base cgroup, removing leftovers of an earlier run
// with the same prefix.
func NewLimits(prefix string) (*Limits, error) {
	cg, err := newCgroups(prefix)
	if err != nil {
		return nil, err
	}
	return &Limits{cg: cg}, nil
}

// Limit makes a cgroup limited to bytes of memory and moves pid into it.
func (l *Limits) Limit(name string, pid int, bytes int64) (*Limited, error) {
	c, err := l.cg.create(name, corev1.ResourceRequirements{Limits: corev1.ResourceList{
		corev1.ResourceMemory: *resource.NewQuantity(bytes, resource.BinarySI),
	}})
	if err != nil {
		return nil, err
	}
	if err := c.enter(pid); err != nil {
		c.remove()
		return nil, err
	}
	return &Limited{c: c}, nil
}

// Close removes every cgroup (their processes must be gone).
func (l *Limits) Close() { l.cg.removeAll() }

// Peak is the most memory the cgroup has used, in bytes (-1 if unknown).
func (l *Limited) Peak() int64 {
	for _, f := range []string{"memory.peak", "memory.max_usage_in_bytes"} {
		if b, err := l.c.read(f); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(b), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

// OOMKills counts the processes the kernel killed for the limit.
func (l *Limited) OOMKills() int {
	for _, f := range []string{"memory.events", "memory.oom_control"} {
		b, err := l.c.read(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(b, "\n") {
			if k, v, ok := strings.Cut(line, " "); ok && k == "oom_kill" {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				return n
			}
		}
	}
	return 0
}

// read reads a file from whichever hierarchy has it.
func (c *containerCgroup) read(file string) (string, error) {
	var err error
	for _, h := range c.cg.hiers {
		var b []byte
		if b, err = os.ReadFile(filepath.Join(h.base, c.name, file)); err == nil {
			return string(b), nil
		}
	}
	return "", err
}
