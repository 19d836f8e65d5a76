package kubelet

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
)

// mountpoint makes sure path exists on the host to mount on, for as long as
// the pod runs.
func (v *podVolumes) mountpoint(path string, dir bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.acquireMountpoint(path, dir)
}

// acquireMountpoint makes sure path exists on the host to mount on (a
// directory, or a file for a file), counting this pod among its users if
// the pod runner created it. v.mu is held.
func (v *podVolumes) acquireMountpoint(path string, dir bool) error {
	if v.mountpoints[path] {
		return nil
	}
	created, err := v.k.mounts.acquire(filepath.Clean(path), dir)
	if err != nil {
		return err
	}
	if v.mountpoints == nil {
		v.mountpoints = map[string]bool{}
	}
	v.mountpoints[path] = true
	v.created = append(v.created, created...)
	return nil
}

// mountpoints counts the pods using each path the pod runner created on
// the host to mount on, and removes a path when its last pod is gone, so
// the host keeps no trace of the pods' mountPaths.
type mountpoints struct {
	mu    sync.Mutex
	users map[string]int
}

// acquire creates what is missing of path and counts one more user of
// each part of it that the pod runner created (now or for an earlier pod).
// The list it returns runs from path up.
func (m *mountpoints) acquire(path string, dir bool) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users == nil {
		m.users = map[string]int{}
	}
	var ours []string
	for p := path; p != filepath.Dir(p); p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil && m.users[p] == 0 {
			break // the host's own
		}
		ours = append(ours, p)
	}
	for i := len(ours) - 1; i >= 0; i-- {
		p := ours[i]
		if m.users[p] == 0 {
			var err error
			if i == 0 && !dir {
				err = os.WriteFile(p, nil, 0o644)
			} else {
				err = os.Mkdir(p, 0o755)
			}
			if err != nil && !errors.Is(err, os.ErrExist) {
				return nil, err
			}
		}
		m.users[p]++
	}
	return ours, nil
}

// release counts one user fewer of each path and removes those left with
// none, deepest first.
func (m *mountpoints) release(paths []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range paths { // each acquire's list runs deepest first
		m.users[p]--
		if m.users[p] <= 0 {
			delete(m.users, p)
			_ = os.Remove(p)
		}
	}
}
