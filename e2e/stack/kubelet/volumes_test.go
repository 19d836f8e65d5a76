package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mountpoints the pod runner creates on the host stay while a pod uses
// them and go with the last one; the host's own paths are never removed.
func TestMountpointsRefcount(t *testing.T) {
	root := t.TempDir() // the host's own
	var m mountpoints
	a, err := m.acquire(filepath.Join(root, "var/run/secrets/sa"), true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.acquire(filepath.Join(root, "var/run/secrets/other/file"), false)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(root, "var/run/secrets/other/file")); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("file mountpoint: %v %v", st, err)
	}
	m.release(a)
	if _, err := os.Stat(filepath.Join(root, "var/run/secrets/sa")); !os.IsNotExist(err) {
		t.Errorf("sa still there after its only pod: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "var/run/secrets/other")); err != nil {
		t.Errorf("a path another pod uses is gone: %v", err)
	}
	m.release(b)
	if _, err := os.Stat(filepath.Join(root, "var")); !os.IsNotExist(err) {
		t.Errorf("created paths left behind: %v", err)
	}
	if _, err := os.Stat(root); err != nil {
		t.Errorf("the host's own directory was removed: %v", err)
	}
}

func TestSandboxArgv(t *testing.T) {
	sb := sandbox{mounts: []bindMount{{src: "/v/a b", dst: "/etc/cfg", readOnly: true}}, bin: "/bin/images/runtime", uid: 2020, gid: 0,
		cgroups: []cgroupView{{at: "memory", fstype: "cgroup", options: "memory", rel: "/x/pod-c"}}}
	sb.hostname = "web-1"
	got := sb.containerArgv([]string{"/bin/images/runtime", "it's"})[2:] // after unshare --uts
	if got[0] != "/bin/sh" || got[1] != "-c" || got[3] != "sh" || got[4] != "/ko-app/runtime" || got[5] != "it's" {
		t.Fatalf("argv %q", got)
	}
	for _, want := range []string{
		"mount --bind '/v/a b' '/etc/cfg'", "mount -o remount,bind,ro '/etc/cfg'",
		"mount -t cgroup -o 'memory' cgroup '/sys/fs/cgroup/memory'", "mount --bind '/sys/fs/cgroup/memory/x/pod-c' '/sys/fs/cgroup/memory'",
		"mount --bind '/bin/images/runtime' '/ko-app/runtime'",
		"mknod -m 666 /dev/null c 1 3",
		"hostname 'web-1'",
		"echo >&3; exec 3>&-\nexec setpriv --reuid=2020 --regid=0 --clear-groups -- \"$@\"",
	} {
		if !strings.Contains(got[2], want) {
			t.Errorf("script lacks %q:\n%s", want, got[2])
		}
	}
	// Probes and hooks run the same sandbox without the started signal.
	if probe := sb.argv([]string{"/bin/images/runtime"})[4]; strings.Contains(probe, ">&3") {
		t.Errorf("a probe's script signals startedFD:\n%s", probe)
	}
	// A host executable as root: run as is, no /ko-app.
	got = sandbox{bin: "/bin/false", uid: -1}.argv([]string{"/usr/bin/true"})[2:]
	if got[4] != "/usr/bin/true" || !strings.Contains(got[2], `exec "$@"`) || strings.Contains(got[2], "setpriv") {
		t.Errorf("host executable: %q", got)
	}
}
