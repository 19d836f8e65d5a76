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

func TestMountArgv(t *testing.T) {
	if got := mountArgv([]string{"/bin/app", "-x"}, nil); strings.Join(got, " ") != "/bin/app -x" {
		t.Errorf("no mounts: %q", got)
	}
	got := mountArgv([]string{"/bin/app", "it's"}, []bindMount{{src: "/v/a b", dst: "/etc/cfg", readOnly: true}})
	if got[0] != "/bin/sh" || got[1] != "-c" || got[3] != "sh" || got[4] != "/bin/app" || got[5] != "it's" {
		t.Fatalf("argv %q", got)
	}
	for _, want := range []string{"mount --bind '/v/a b' '/etc/cfg'", "mount -o remount,bind,ro '/etc/cfg'", `exec "$@"`} {
		if !strings.Contains(got[2], want) {
			t.Errorf("script lacks %q:\n%s", want, got[2])
		}
	}
}
