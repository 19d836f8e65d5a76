package kubelet

import (
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// A container's sandbox. `ip netns exec` gives every process of a pod its
// network namespace and a mount namespace of its own with a fresh /sys; a
// shell script then builds, inside that mount namespace, what a container
// runtime gives a container, and execs the process:
//
//   - its hostname: the pod's (a UTS namespace of its own);
//   - /dev: a tmpfs with null, zero, full, random, urandom, tty, a private
//     devpts (ptmx), shm and the fd links, and no console;
//   - /sys/fs/cgroup: the container's own cgroups, read-only;
//   - the volumes at their mountPaths;
//   - the image's binary at /ko-app/<name>, where ko puts it, run from there;
//   - the user: runAsUser/runAsGroup, else the image's (65532 for the
//     ko-built images, root for a host executable given as the image), with
//     ports below 1024 open to it as in a runtime's network namespace.
//
// Nothing of this is visible on the host.
type sandbox struct {
	mounts   []bindMount
	cgroups  []cgroupView
	bin      string // the image's binary, shown at /ko-app/<name> when it is argv[0]
	uid, gid int64  // -1 for root
	groups   []int64
	hostname string // the pod's, in a UTS namespace of its own
}

// koUser is the user ko-built images run as (distroless nonroot), and
// koEntrypoint the directory of their binary.
const (
	koUser       = 65532
	koEntrypoint = "/ko-app"
)

// entrypoint reports whether argv runs the image's binary, which then runs
// from /ko-app (the directory must exist on the host to mount on).
func (s sandbox) entrypoint(argv []string) bool {
	return len(argv) > 0 && s.bin != "" && argv[0] == s.bin
}

// containerUser is the user and group a container runs as, and its
// supplementary groups (fsGroup).
func containerUser(pod *corev1.Pod, c *corev1.Container, hostExecutable bool) (uid, gid int64, groups []int64) {
	uid, gid = koUser, koUser
	if hostExecutable {
		uid, gid = -1, -1
	}
	if ps := pod.Spec.SecurityContext; ps != nil {
		if ps.RunAsUser != nil {
			uid, gid = *ps.RunAsUser, 0
		}
		if ps.RunAsGroup != nil {
			gid = *ps.RunAsGroup
		}
		if ps.FSGroup != nil {
			groups = append(groups, *ps.FSGroup)
		}
		groups = append(groups, ps.SupplementalGroups...)
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			uid = *cs.RunAsUser
			if cs.RunAsGroup == nil && (pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.RunAsGroup == nil) {
				gid = 0
			}
		}
		if cs.RunAsGroup != nil {
			gid = *cs.RunAsGroup
		}
	}
	if uid == 0 && gid <= 0 && len(groups) == 0 {
		uid, gid = -1, -1 // root as the host runs it
	}
	return uid, gid, groups
}

// argv wraps argv so that it runs in the sandbox: unshare gives it a UTS
// namespace (and execs, keeping the pid), the script does the rest.
func (s sandbox) argv(argv []string) []string { return s.script(argv, false) }

// startedFD is where a container's sandbox script says it is built, just
// before it execs the container's process: a runtime reports a container
// started then, not when it begins to build the sandbox, which takes a
// few dozen commands (seconds on a loaded machine).
const startedFD = 3

// containerArgv is argv for the container's own process: as argv, and the
// script writes a byte to startedFD before the exec.
func (s sandbox) containerArgv(argv []string) []string { return s.script(argv, true) }

func (s sandbox) script(argv []string, signal bool) []string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("set -e")
	if s.hostname != "" {
		line("hostname %s", shellQuote(s.hostname))
	}
	line("echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start")
	line("mount -t tmpfs -o nosuid,mode=755,size=65536k tmpfs /dev")
	for _, d := range [][3]string{{"null", "1", "3"}, {"zero", "1", "5"}, {"full", "1", "7"}, {"random", "1", "8"}, {"urandom", "1", "9"}, {"tty", "5", "0"}} {
		line("mknod -m 666 /dev/%s c %s %s", d[0], d[1], d[2])
	}
	line("mkdir /dev/pts /dev/shm")
	line("mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts")
	line("ln -s pts/ptmx /dev/ptmx")
	line("mount -t tmpfs -o nosuid,nodev,mode=1777 shm /dev/shm")
	line("ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr")
	if len(s.cgroups) > 0 {
		if s.cgroups[0].at != "" { // v1: a tmpfs with one mount per hierarchy
			line("mount -t tmpfs -o nosuid,nodev,noexec,mode=755 cgroup /sys/fs/cgroup")
		}
		for _, v := range s.cgroups {
			at := path.Join("/sys/fs/cgroup", v.at)
			if v.at != "" {
				line("mkdir %s", shellQuote(at))
			}
			opts := ""
			if v.options != "" {
				opts = " -o " + shellQuote(v.options)
			}
			line("mount -t %s%s %s %s", v.fstype, opts, v.fstype, shellQuote(at))
			line("mount --bind %s %s", shellQuote(path.Join(at, v.rel)), shellQuote(at))
			line("mount -o remount,bind,ro %s", shellQuote(at))
		}
		if s.cgroups[0].at != "" {
			line("mount -o remount,ro /sys/fs/cgroup")
		}
	}
	for _, m := range s.mounts {
		line("mount --bind %s %s", shellQuote(m.src), shellQuote(m.dst))
		if m.readOnly {
			line("mount -o remount,bind,ro %s", shellQuote(m.dst))
		}
	}
	if s.entrypoint(argv) {
		ep := koEntrypoint + "/" + path.Base(s.bin)
		line("mount -t tmpfs -o mode=755 ko-app %s", koEntrypoint)
		line(": > %s", shellQuote(ep))
		line("mount --bind %s %s", shellQuote(s.bin), shellQuote(ep))
		argv = append([]string{ep}, argv[1:]...)
	}
	if signal {
		line("echo >&%d; exec %d>&-", startedFD, startedFD)
	}
	if s.uid >= 0 {
		groups := "--clear-groups"
		if len(s.groups) > 0 {
			var gs []string
			for _, g := range s.groups {
				gs = append(gs, fmt.Sprint(g))
			}
			groups = "--groups=" + strings.Join(gs, ",")
		}
		line(`exec setpriv --reuid=%d --regid=%d %s -- "$@"`, s.uid, max(s.gid, 0), groups)
	} else {
		line(`exec "$@"`)
	}
	return append([]string{"unshare", "--uts", "/bin/sh", "-c", b.String(), "sh"}, argv...)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
