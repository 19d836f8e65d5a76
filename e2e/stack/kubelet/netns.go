package kubelet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// etcNetns is where `ip netns exec` looks for per-namespace files that it
// bind-mounts over /etc (hosts, resolv.conf).
const etcNetns = "/etc/netns"

// netnsName names a pod's network namespace after its UID, so a pod that is
// deleted and re-created under the same name never collides with the old one.
func netnsName(prefix string, uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	return prefix + hex.EncodeToString(sum[:5])
}

// vethName is the host end of the pod's veth pair; interface names are
// limited to 15 bytes.
func vethName(netns string) string {
	sum := sha256.Sum256([]byte(netns))
	return "vs" + hex.EncodeToString(sum[:5])
}

func ipCmd(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

type podNetwork struct {
	netns   string
	veth    string
	ip      net.IP
	subnet  *net.IPNet
	gateway net.IP
	bridge  string
}

// setup creates the namespace, a veth pair with eth0 inside and the other end
// on the bridge, the address and the default route via the bridge.
func (n *podNetwork) setup(ctx context.Context, hosts, resolv string) error {
	ones, _ := n.subnet.Mask.Size()
	cidr := n.ip.String() + "/" + strconv.Itoa(ones)
	// A namespace of the same name can only be a leftover of this very pod.
	n.teardown(ctx)
	if err := writeNetnsFiles(n.netns, hosts, resolv); err != nil {
		return err
	}
	steps := [][]string{
		{"netns", "add", n.netns},
		{"link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", n.netns},
		{"link", "set", n.veth, "master", n.bridge},
		{"link", "set", n.veth, "up"},
		{"-n", n.netns, "link", "set", "lo", "up"},
		{"-n", n.netns, "addr", "add", cidr, "dev", "eth0"},
		{"-n", n.netns, "link", "set", "eth0", "up"},
		{"-n", n.netns, "route", "add", "default", "via", n.gateway.String()},
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s...); err != nil {
			n.teardown(context.WithoutCancel(ctx))
			return err
		}
	}
	return nil
}

// teardown kills whatever still runs in the namespace and removes it, the
// veth pair (it dies with its peer) and the /etc/netns files. Errors are
// ignored: it runs on half-built and already-removed state alike.
func (n *podNetwork) teardown(ctx context.Context) {
	removeNetns(ctx, n.netns)
	_ = ipCmd(ctx, "link", "del", n.veth)
}

func removeNetns(ctx context.Context, name string) {
	killNetnsPids(ctx, name)
	_ = ipCmd(ctx, "netns", "del", name)
	_ = os.RemoveAll(filepath.Join(etcNetns, name))
}

// killNetnsPids SIGKILLs processes left in a namespace: a namespace with
// live processes outlives `ip netns del`, and so does its veth.
func killNetnsPids(ctx context.Context, name string) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", name).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// cleanupLeftovers removes namespaces and /etc/netns entries carrying our
// prefix, left behind by a previous run that did not shut down cleanly.
func cleanupLeftovers(ctx context.Context, prefix string) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// Lines look like "name" or "name (id: 3)".
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name != "" && strings.HasPrefix(name, prefix) {
			removeNetns(ctx, name)
		}
	}
	entries, err := filepath.Glob(filepath.Join(etcNetns, prefix+"*"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		_ = os.RemoveAll(e)
	}
	return nil
}

func writeNetnsFiles(netns, hosts, resolv string) error {
	dir := filepath.Join(etcNetns, netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolv), 0o644)
}

// podHostname is the pod's host name: spec.hostname, else its name, at
// most 63 characters as a kubelet cuts it.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// hostsFile renders the pod's /etc/hosts the way a kubelet does, plus the
// extra entries every pod gets (e.g. the private gateway's domain).
func hostsFile(pod *corev1.Pod, ip net.IP, extra map[string]string) string {
	var b strings.Builder
	b.WriteString("# Managed by the sluice e2e kubelet.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	hostname := podHostname(pod)
	names := hostname
	if pod.Spec.Subdomain != "" {
		names = fmt.Sprintf("%s.%s.%s.svc.cluster.local\t%s", hostname, pod.Spec.Subdomain, pod.Namespace, hostname)
	}
	fmt.Fprintf(&b, "%s\t%s\n", ip, names)
	if len(extra) > 0 {
		b.WriteString("# Entries added by the stack.\n")
		hosts := make([]string, 0, len(extra))
		for h := range extra {
			hosts = append(hosts, h)
		}
		sort.Strings(hosts)
		for _, h := range hosts {
			fmt.Fprintf(&b, "%s\t%s\n", extra[h], h)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.String()
}

// resolvConf points the resolver at nameserver, or by default at the pod's
// own loopback where nothing answers: every name a pod needs is in its hosts
// file, and no query may leave the machine.
func resolvConf(pod *corev1.Pod, nameserver string) string {
	if nameserver == "" {
		nameserver = "127.0.0.1"
	}
	return fmt.Sprintf("nameserver %s\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n",
		nameserver, pod.Namespace)
}
