package stack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// PodNetnsPrefix starts the name of every pod network namespace; the stack
// removes all of them on stop and before start.
const PodNetnsPrefix = "sluice-"

var errNotRoot = errors.New("the stack must run as root: it creates a bridge and network namespaces (try: sudo make e2e, or sudo -E go run ./e2e/cmd/stack up)")

// NeedRoot says, in one line, why a caller that is not root cannot start
// the stack. Tests that need the stack carry the e2e build tag and fail
// with it.
func NeedRoot() error {
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	return nil
}

func (s *Stack) checkPrereqs() error {
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the `ip` command (iproute2) is missing: apt-get install iproute2")
	}
	for _, b := range []struct{ name, fix string }{
		{"etcd", "hack/build-tools.sh etcd"},
		{"kube-apiserver", "hack/build-tools.sh kube-apiserver"},
		{"kube-controller-manager", "hack/build-tools.sh kube-controller-manager"},
	} {
		if _, err := os.Stat(s.bin(b.name)); err != nil {
			return fmt.Errorf("%s is missing; build it with: %s (takes minutes)", s.bin(b.name), b.fix)
		}
	}
	_, subnet, err := net.ParseCIDR(s.opts.Subnet)
	if err != nil || subnet.IP.To4() == nil {
		return fmt.Errorf("pod subnet %q is not an IPv4 CIDR", s.opts.Subnet)
	}
	ip := subnet.IP.To4()
	s.BridgeIP = net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).String()
	return nil
}

// checkPorts fails when another program holds a port the stack needs.
func (s *Stack) checkPorts() error {
	p := s.opts.Ports
	type use struct {
		port int
		what string
	}
	uses := []use{
		{p.Etcd, "etcd"}, {p.EtcdPeer, "etcd peer"}, {p.APIServer, "kube-apiserver"},
		{p.ControllerManager, "kube-controller-manager"},
		{p.ExternalHTTP, "external gateway HTTP"}, {p.ExternalHTTPS, "external gateway HTTPS"},
		{p.InternalHTTP, "internal gateway HTTP"}, {p.InternalHTTPS, "internal gateway HTTPS"},
	}
	for i := 0; i < s.opts.Controllers; i++ {
		uses = append(uses, use{p.XDS + i, fmt.Sprintf("sluice-%d xDS", i)}, use{p.SluiceAdmin + i, fmt.Sprintf("sluice-%d admin", i)})
	}
	for i := 0; i < s.opts.Envoys; i++ {
		uses = append(uses, use{p.EnvoyAdmin + i, fmt.Sprintf("envoy-%d admin", i)})
	}
	for _, u := range uses {
		l, err := net.Listen("tcp", hostPort("127.0.0.1", u.port))
		if err != nil {
			return fmt.Errorf("port %d (%s) is in use by another program (see: ss -ltnp 'sport = :%d')", u.port, u.what, u.port)
		}
		l.Close()
	}
	return nil
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// setupBridge creates the bridge with the first address of the pod subnet.
// Forwarding is off for it so pod traffic can reach nothing but this host.
//
// The bridge gets a MAC address of its own: without one Linux gives it the
// lowest of its ports', so it changes whenever the pod owning that port
// leaves, and every other pod's ARP entry for the gateway then points
// nowhere: their replies vanish for up to the neighbour timeout (tens of
// seconds), and a response in flight is lost for good if its pod exits
// meanwhile.
func (s *Stack) setupBridge() error {
	if err := s.checkSubnetFree(); err != nil {
		return err
	}
	br := s.opts.Bridge
	ones, _ := mustCIDR(s.opts.Subnet).Mask.Size()
	if _, err := run("ip", "link", "add", br, "address", bridgeMAC(net.ParseIP(s.BridgeIP)), "type", "bridge"); err != nil {
		return err
	}
	s.bridge = true
	for _, kv := range [][2]string{
		{"/proc/sys/net/ipv4/conf/" + br + "/forwarding", "0"},
		{"/proc/sys/net/ipv6/conf/" + br + "/disable_ipv6", "1"},
	} {
		if err := os.WriteFile(kv[0], []byte(kv[1]), 0o644); err != nil {
			return fmt.Errorf("setting %s: %w", kv[0], err)
		}
	}
	if _, err := run("ip", "addr", "add", fmt.Sprintf("%s/%d", s.BridgeIP, ones), "dev", br); err != nil {
		return err
	}
	if _, err := run("ip", "link", "set", br, "up"); err != nil {
		return err
	}
	// The host owns every cluster IP (the Service proxy listens on them);
	// the route goes with the bridge.
	if _, err := run("ip", "route", "add", "local", s.opts.ServiceCIDR, "dev", br); err != nil {
		return err
	}
	s.logf("bridge %s up with %s/%d, cluster IPs %s local", br, s.BridgeIP, ones, s.opts.ServiceCIDR)
	return nil
}

// bridgeMAC is a locally administered unicast address made from the
// bridge's IPv4 address, so it is the same on every start.
func bridgeMAC(ip net.IP) string {
	v := ip.To4()
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", v[0], v[1], v[2], v[3])
}

func mustCIDR(c string) *net.IPNet {
	_, n, err := net.ParseCIDR(c)
	if err != nil {
		panic(err)
	}
	return n
}

// checkSubnetFree refuses a pod subnet or service range that overlaps an
// address already on this machine.
func (s *Stack) checkSubnetFree() error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, c := range []string{s.opts.Subnet, s.opts.ServiceCIDR} {
		n := mustCIDR(c)
		for _, a := range addrs {
			an, ok := a.(*net.IPNet)
			if ok && (n.Contains(an.IP) || an.Contains(n.IP)) && !an.IP.IsLoopback() {
				return fmt.Errorf("%s overlaps %s already on this machine; pick another with -subnet / -service-cidr", c, an)
			}
		}
	}
	return nil
}

func (s *Stack) removeBridge() error {
	links, err := s.bridgePorts()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		if _, err := run("ip", "link", "del", l); err != nil && !strings.Contains(err.Error(), "Cannot find") {
			errs = append(errs, err)
		}
	}
	if linkExists(s.opts.Bridge) {
		if _, err := run("ip", "link", "del", s.opts.Bridge); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// bridgePorts lists the host ends of veth pairs attached to the bridge.
func (s *Stack) bridgePorts() ([]string, error) {
	if !linkExists(s.opts.Bridge) {
		return nil, nil
	}
	out, err := run("ip", "-j", "link", "show", "master", s.opts.Bridge)
	if err != nil {
		return nil, err
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("reading ip -j link output: %w", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	return names, nil
}

// removePodNetns kills whatever still runs inside the pod network
// namespaces and deletes them (their veth pairs go with them).
func (s *Stack) removePodNetns() error {
	out, err := run("ip", "netns", "list")
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], PodNetnsPrefix) {
			continue
		}
		ns := f[0]
		s.logf("removing pod network namespace %s", ns)
		if pids, err := run("ip", "netns", "pids", ns); err == nil {
			for _, p := range strings.Fields(pids) {
				var pid int
				if _, err := fmt.Sscan(p, &pid); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					waitGone(pid, 2*time.Second)
				}
			}
		}
		if _, err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	// hosts and resolv.conf the pod runner wrote for `ip netns exec`.
	dirs, _ := filepath.Glob(filepath.Join("/etc/netns", PodNetnsPrefix+"*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cleanLeftovers undoes what a previous run left behind when it crashed:
// processes, pod namespaces, veths, the bridge and old state.
func (s *Stack) cleanLeftovers() error {
	var errs []error
	if err := s.killLeftoverProcs(); err != nil {
		errs = append(errs, err)
	}
	if err := s.removePodNetns(); err != nil {
		errs = append(errs, err)
	}
	if linkExists(s.opts.Bridge) {
		s.logf("removing leftover bridge %s", s.opts.Bridge)
	}
	if err := s.removeBridge(); err != nil {
		errs = append(errs, err)
	}
	if err := s.removeState(); err != nil {
		errs = append(errs, err)
	}
	// Fresh logs for this run; stack.log belongs to `up --background`.
	logs, _ := filepath.Glob(s.path("logs", "*"))
	for _, l := range logs {
		if filepath.Base(l) != BackgroundLog {
			if err := os.RemoveAll(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// BackgroundLog is the log file, under logs/, of a stack run in the background.
const BackgroundLog = "stack.log"

// Down stops the stack that runs with opts' state dir, if any, and removes
// whatever a crashed one left behind.
func Down(opts Options) error {
	if err := opts.setDefaults(); err != nil {
		return err
	}
	s := &Stack{opts: opts}
	if pid, ok := OwnerPid(opts.StateDir); ok {
		s.logf("stopping the stack (pid %d)", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		waitGone(pid, 90*time.Second)
		if _, ok := OwnerPid(opts.StateDir); ok {
			s.logf("the stack did not stop in 90s; killing it")
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
	}
	if err := s.checkPrereqs(); err != nil && os.Geteuid() != 0 {
		return err
	}
	return s.cleanLeftovers()
}
