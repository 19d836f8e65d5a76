package kubelet

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Resource limits. Each container gets a cgroup of its own under the pod
// runner's (memory and cpu, cgroup v1 or v2, whichever the host mounts),
// with the limits and shares a kubelet would set; its process is moved in
// right after it starts, and the container sees only its own cgroup at
// /sys/fs/cgroup, read-only. Without a writable cgroup hierarchy the pod
// runner logs why once and runs containers without limits.

// cgroupControllers are the v1 controllers a container gets.
var cgroupControllers = []string{"memory", "cpu"}

// hierarchy is one cgroup hierarchy: where the host mounts it, the mount's
// options for mounting it again inside a container, and the pod runner's
// own directory in it, under which containers get theirs.
type hierarchy struct {
	mount   string // e.g. /sys/fs/cgroup/memory
	fstype  string // cgroup or cgroup2
	options string // the -o of the mount: controllers for v1
	root    string // the mount's root within the hierarchy
	base    string // host path: our cgroup/<prefix>pods
	rel     string // base, relative to the hierarchy's root
}

// cgroups finds the hierarchies and makes the pod runner's base cgroups.
type cgroups struct {
	v2    bool
	hiers []hierarchy // v1: one per controller; v2: one
}

// newCgroups prepares the base cgroups, removing leftovers of an earlier
// run with the same prefix.
func newCgroups(prefix string) (*cgroups, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	cg := &cgroups{}
	if m, ok := mounts["/sys/fs/cgroup"]; ok && m.fstype == "cgroup2" {
		cg.v2 = true
		cg.hiers = []hierarchy{m}
	} else {
		for _, c := range cgroupControllers {
			var found *hierarchy
			for _, m := range mounts {
				if m.fstype == "cgroup" && slices.Contains(strings.Split(m.options, ","), c) {
					found = &m
					break
				}
			}
			if found == nil {
				return nil, fmt.Errorf("no cgroup v1 hierarchy for %s is mounted", c)
			}
			cg.hiers = append(cg.hiers, *found)
		}
	}
	for i := range cg.hiers {
		h := &cg.hiers[i]
		key := "" // v2: the unified hierarchy, 0::/path
		if !cg.v2 {
			key = strings.Split(h.options, ",")[0]
		}
		path, ok := own[key]
		if !ok {
			return nil, fmt.Errorf("this process is in no %q cgroup", key)
		}
		h.rel = filepath.Join(path, strings.TrimSuffix(prefix, "-")+"-pods")
		h.base = filepath.Join(h.mount, strings.TrimPrefix(h.rel, h.root))
		removeCgroupTree(h.base)
		if err := os.MkdirAll(h.base, 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", h.base, err)
		}
		if cg.v2 {
			// Children may only use the controllers enabled here.
			_ = os.WriteFile(filepath.Join(filepath.Dir(h.base), "cgroup.subtree_control"), []byte("+memory +cpu"), 0o644)
			_ = os.WriteFile(filepath.Join(h.base, "cgroup.subtree_control"), []byte("+memory +cpu"), 0o644)
		}
	}
	return cg, nil
}

// CheckCgroups says whether the pod runner can give containers cgroups on
// this machine (nil), or why not.
func CheckCgroups() error {
	cg, err := newCgroups("sluice-check-")
	if err != nil {
		return err
	}
	cg.removeAll()
	return nil
}

// ownCgroups reads /proc/self/cgroup: controller (v1) or "" (v2) -> path.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "" {
			out[""] = f[2]
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			out[c] = f[2]
		}
	}
	return out, nil
}

// cgroupMounts reads the cgroup mounts of /proc/self/mountinfo by mount
// point.
func cgroupMounts() (map[string]hierarchy, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]hierarchy{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts ... - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || (b[0] != "cgroup" && b[0] != "cgroup2") {
			continue
		}
		var opts []string
		for _, o := range strings.Split(b[2], ",") {
			if o != "rw" && o != "ro" {
				opts = append(opts, o)
			}
		}
		out[a[4]] = hierarchy{mount: a[4], fstype: b[0], options: strings.Join(opts, ","), root: a[3]}
	}
	return out, sc.Err()
}

// removeCgroupTree removes a cgroup and its children, deepest first (a
// cgroup directory is removed with rmdir, never its files).
func removeCgroupTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir)
}

// removeAll removes the base cgroups (their containers are gone).
func (cg *cgroups) removeAll() {
	for _, h := range cg.hiers {
		removeCgroupTree(h.base)
	}
}

// containerCgroup is one container's cgroup in each hierarchy.
type containerCgroup struct {
	cg   *cgroups
	name string
}

// create makes the container's cgroups with the limits of its resources.
func (cg *cgroups) create(name string, res corev1.ResourceRequirements) (*containerCgroup, error) {
	c := &containerCgroup{cg: cg, name: name}
	shares := int64(2) // what a kubelet gives a container that requests no CPU
	if q, ok := res.Requests[corev1.ResourceCPU]; ok {
		shares = max(q.MilliValue()*1024/1000, 2)
	}
	quota := int64(-1)
	if q, ok := res.Limits[corev1.ResourceCPU]; ok {
		quota = q.MilliValue() * 100 // of a 100ms period
	}
	memory := int64(-1)
	if q, ok := res.Limits[corev1.ResourceMemory]; ok {
		memory = q.Value() &^ 4095
	}
	var files [][2]string
	if cg.v2 {
		cpuMax, memMax := "max 100000", "max"
		if quota > 0 {
			cpuMax = fmt.Sprintf("%d 100000", quota)
		}
		if memory > 0 {
			memMax = strconv.FormatInt(memory, 10)
		}
		files = [][2]string{{"memory.max", memMax}, {"cpu.max", cpuMax},
			{"cpu.weight", strconv.FormatInt(1+((shares-2)*9999)/262142, 10)}}
	} else {
		files = [][2]string{{"cpu.shares", strconv.FormatInt(shares, 10)}, {"cpu.cfs_period_us", "100000"},
			{"cpu.cfs_quota_us", strconv.FormatInt(quota, 10)}}
		if memory > 0 {
			files = append(files, [2]string{"memory.limit_in_bytes", strconv.FormatInt(memory, 10)})
		}
	}
	for _, h := range cg.hiers {
		dir := filepath.Join(h.base, name)
		removeCgroupTree(dir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			c.remove()
			return nil, err
		}
	}
	for _, f := range files {
		if err := c.write(f[0], f[1]); err != nil {
			c.remove()
			return nil, err
		}
	}
	return c, nil
}

// write sets a file in whichever hierarchy has it.
func (c *containerCgroup) write(file, value string) error {
	for _, h := range c.cg.hiers {
		p := filepath.Join(h.base, c.name, file)
		if _, err := os.Stat(p); err == nil {
			return os.WriteFile(p, []byte(value), 0o644)
		}
	}
	return fmt.Errorf("no cgroup file %s", file)
}

// enter moves a process into the container's cgroups.
func (c *containerCgroup) enter(pid int) error {
	var errs []error
	for _, h := range c.cg.hiers {
		if err := os.WriteFile(filepath.Join(h.base, c.name, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// remove deletes the container's cgroups; its processes are gone by then.
func (c *containerCgroup) remove() {
	for _, h := range c.cg.hiers {
		_ = os.Remove(filepath.Join(h.base, c.name))
	}
}

// views are the container's view: per hierarchy, where it goes under
// /sys/fs/cgroup, how to mount the hierarchy, and the container's path in
// it (bound over the mount, read-only).
func (c *containerCgroup) views() []cgroupView {
	var out []cgroupView
	for _, h := range c.cg.hiers {
		v := cgroupView{fstype: h.fstype, options: h.options, rel: strings.TrimPrefix(filepath.Join(h.rel, c.name), h.root)}
		if !c.cg.v2 {
			v.at = filepath.Base(h.mount)
		}
		out = append(out, v)
	}
	return out
}

type cgroupView struct {
	at      string // under /sys/fs/cgroup; "" for v2 (the whole of it)
	fstype  string
	options string
	rel     string
}
