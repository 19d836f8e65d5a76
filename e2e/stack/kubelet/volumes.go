package kubelet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Volumes. Each volume of a pod is a directory on the host,
// <VolumeDir>/<pod uid>/<volume>, filled when the first container starts;
// a container sees it at its mountPath through a bind mount made in the
// container's own mount namespace (`ip netns exec` gives each process one),
// so nothing is mounted on the host. Supported: emptyDir, configMap,
// secret, downwardAPI, projected (those three and serviceAccountToken) and
// hostPath. Files are written once; service account tokens are renewed at
// 80 % of their lifetime, as a kubelet does.

// defaultTokenSeconds is a projected token's lifetime when the pod does not
// say (the API's default).
const defaultTokenSeconds = 3600

type podVolumes struct {
	k   *kubelet
	pod *corev1.Pod
	dir string

	mu     sync.Mutex
	ready  bool
	paths  map[string]string // volume name -> host path
	tokens []*tokenFile
	cancel context.CancelFunc // stops token renewal
	// mountpoints this pod uses, and those of them the pod runner created
	mountpoints map[string]bool
	created     []string
}

// tokenFile is a projected service account token and when to renew it.
type tokenFile struct {
	path     string
	src      *corev1.ServiceAccountTokenProjection
	mode     os.FileMode
	renewAt  time.Time
	lastFail time.Time
}

func newPodVolumes(k *kubelet, pod *corev1.Pod) *podVolumes {
	return &podVolumes{k: k, pod: pod, dir: filepath.Join(k.cfg.VolumeDir, string(pod.UID))}
}

// bindMount is one volumeMount of a container, resolved to the host.
type bindMount struct {
	src, dst string
	readOnly bool
}

// mounts prepares the pod's volumes if that has not succeeded yet and
// returns the container's mounts.
func (v *podVolumes) mounts(ctx context.Context, c *corev1.Container) ([]bindMount, error) {
	if len(c.VolumeMounts) == 0 {
		return nil, nil
	}
	if err := v.prepare(ctx); err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []bindMount
	for _, m := range c.VolumeMounts {
		src, ok := v.paths[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: the pod has no such volume", m.Name)
		}
		if m.SubPath != "" {
			sub := filepath.Clean("/" + m.SubPath)
			src = filepath.Join(src, sub)
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
				// The kubelet creates a missing subPath as a directory.
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, err
				}
			}
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("volumeMount %s: %w", m.Name, err)
		}
		if err := v.acquireMountpoint(m.MountPath, st.IsDir()); err != nil {
			return nil, fmt.Errorf("volumeMount %s: %w", m.Name, err)
		}
		out = append(out, bindMount{src: src, dst: m.MountPath, readOnly: m.ReadOnly})
	}
	return out, nil
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

// prepare fills every volume once; a failure (a missing ConfigMap, say) is
// retried on the next container start.
func (v *podVolumes) prepare(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ready {
		return nil
	}
	paths := map[string]string{}
	var tokens []*tokenFile
	for _, vol := range v.pod.Spec.Volumes {
		dir := filepath.Join(v.dir, vol.Name)
		var err error
		switch s := vol.VolumeSource; {
		case s.HostPath != nil:
			paths[vol.Name] = s.HostPath.Path
			continue
		case s.EmptyDir != nil:
			err = os.MkdirAll(dir, 0o777)
		case s.ConfigMap != nil:
			err = v.writeConfigMap(ctx, dir, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, s.ConfigMap.DefaultMode)
		case s.Secret != nil:
			err = v.writeSecret(ctx, dir, s.Secret.SecretName, s.Secret.Items, s.Secret.Optional, s.Secret.DefaultMode)
		case s.DownwardAPI != nil:
			err = v.writeDownward(dir, s.DownwardAPI.Items, s.DownwardAPI.DefaultMode)
		case s.Projected != nil:
			tokens, err = v.writeProjected(ctx, dir, s.Projected, tokens)
		default:
			err = errors.New("this volume type is not supported by the local pod runner (emptyDir, configMap, secret, downwardAPI, projected and hostPath are)")
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		paths[vol.Name] = dir
	}
	v.paths, v.tokens, v.ready = paths, tokens, true
	if len(tokens) > 0 {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		v.cancel = cancel
		go v.renewTokens(rctx)
	}
	return nil
}

// remove stops token renewal and deletes the volumes' contents (never a
// hostPath, which is not under dir).
func (v *podVolumes) remove() {
	v.mu.Lock()
	if v.cancel != nil {
		v.cancel()
	}
	v.k.mounts.release(v.created)
	v.created = nil
	v.mu.Unlock()
	_ = os.RemoveAll(v.dir)
}

func fileMode(item *int32, def *int32) os.FileMode {
	switch {
	case item != nil:
		return os.FileMode(*item)
	case def != nil:
		return os.FileMode(*def)
	}
	return 0o644
}

// writeFile writes name under dir atomically (a reader never sees half a
// token), refusing paths that leave dir.
func writeFile(dir, name string, data []byte, mode os.FileMode) error {
	rel := filepath.Clean(name)
	if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("path %q leaves the volume", name)
	}
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil { // WriteFile's mode is masked by umask
		return err
	}
	return os.Rename(tmp, p)
}

// writeKeys writes data's keys (all of them, or the items) into dir.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, defMode *int32, what string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(items) == 0 {
		for k, b := range data {
			if err := writeFile(dir, k, b, fileMode(nil, defMode)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s has no key %s", what, it.Key)
		}
		if err := writeFile(dir, it.Path, b, fileMode(it.Mode, defMode)); err != nil {
			return err
		}
	}
	return nil
}

func (v *podVolumes) configMapData(ctx context.Context, name string, optional *bool) (map[string][]byte, error) {
	cm, err := v.k.client.CoreV1().ConfigMaps(v.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional != nil && *optional {
			return nil, nil
		}
		return nil, err
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	for k, b := range cm.BinaryData {
		data[k] = b
	}
	return data, nil
}

func (v *podVolumes) secretData(ctx context.Context, name string, optional *bool) (map[string][]byte, error) {
	s, err := v.k.client.CoreV1().Secrets(v.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if optional != nil && *optional {
			return nil, nil
		}
		return nil, err
	}
	return s.Data, nil
}

func (v *podVolumes) writeConfigMap(ctx context.Context, dir, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	data, err := v.configMapData(ctx, name, optional)
	if err != nil {
		return err
	}
	return writeKeys(dir, data, items, defMode, "configmap "+name)
}

func (v *podVolumes) writeSecret(ctx context.Context, dir, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	data, err := v.secretData(ctx, name, optional)
	if err != nil {
		return err
	}
	return writeKeys(dir, data, items, defMode, "secret "+name)
}

func (v *podVolumes) writeDownward(dir string, items []corev1.DownwardAPIVolumeFile, defMode *int32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, it := range items {
		var val string
		switch {
		case it.FieldRef != nil:
			var err error
			if val, err = downwardField(v.pod, it.FieldRef.FieldPath); err != nil {
				return err
			}
		case it.ResourceFieldRef != nil:
			val = "0" // no resource accounting here
		}
		if err := writeFile(dir, it.Path, []byte(val), fileMode(it.Mode, defMode)); err != nil {
			return err
		}
	}
	return nil
}

// downwardField is podField plus what only volumes may hold: all labels or
// annotations, one per line.
func downwardField(pod *corev1.Pod, field string) (string, error) {
	render := func(m map[string]string) string {
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(&b, "%s=%q\n", k, m[k])
		}
		return strings.TrimSuffix(b.String(), "\n")
	}
	switch field {
	case "metadata.labels":
		return render(pod.Labels), nil
	case "metadata.annotations":
		return render(pod.Annotations), nil
	}
	return podField(pod, field, pod.Status.PodIP, pod.Status.HostIP)
}

func (v *podVolumes) writeProjected(ctx context.Context, dir string, p *corev1.ProjectedVolumeSource, tokens []*tokenFile) ([]*tokenFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, src := range p.Sources {
		var err error
		switch {
		case src.ConfigMap != nil:
			err = v.writeConfigMap(ctx, dir, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, p.DefaultMode)
		case src.Secret != nil:
			err = v.writeSecret(ctx, dir, src.Secret.Name, src.Secret.Items, src.Secret.Optional, p.DefaultMode)
		case src.DownwardAPI != nil:
			err = v.writeDownward(dir, src.DownwardAPI.Items, p.DefaultMode)
		case src.ServiceAccountToken != nil:
			t := &tokenFile{path: filepath.Join(dir, src.ServiceAccountToken.Path), src: src.ServiceAccountToken, mode: fileMode(nil, p.DefaultMode)}
			if err = v.writeToken(ctx, t); err == nil {
				tokens = append(tokens, t)
			}
		default:
			err = errors.New("projected source not supported by the local pod runner")
		}
		if err != nil {
			return nil, err
		}
	}
	return tokens, nil
}

// writeToken asks the API server for a token of the pod's service account,
// bound to the pod, and writes it.
func (v *podVolumes) writeToken(ctx context.Context, t *tokenFile) error {
	secs := int64(defaultTokenSeconds)
	if t.src.ExpirationSeconds != nil {
		secs = *t.src.ExpirationSeconds
	}
	var aud []string
	if t.src.Audience != "" {
		aud = []string{t.src.Audience}
	}
	sa := v.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		Audiences: aud, ExpirationSeconds: &secs,
		BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: v.pod.Name, UID: v.pod.UID},
	}}
	issued := time.Now()
	tr, err := v.k.client.CoreV1().ServiceAccounts(v.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token of service account %s: %w", sa, err)
	}
	if err := writeFile(filepath.Dir(t.path), filepath.Base(t.path), []byte(tr.Status.Token), t.mode); err != nil {
		return err
	}
	life := tr.Status.ExpirationTimestamp.Sub(issued)
	t.renewAt = issued.Add(life * 8 / 10)
	return nil
}

// renewTokens keeps the pod's tokens fresh until ctx ends.
func (v *podVolumes) renewTokens(ctx context.Context) {
	for {
		v.mu.Lock()
		next := time.Now().Add(time.Hour)
		for _, t := range v.tokens {
			if t.renewAt.Before(next) {
				next = t.renewAt
			}
		}
		v.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		v.mu.Lock()
		for _, t := range v.tokens {
			if time.Now().Before(t.renewAt) {
				continue
			}
			if err := v.writeToken(ctx, t); err != nil && ctx.Err() == nil {
				v.k.log.Warn("renewing a service account token", zap.String("pod", v.pod.Namespace+"/"+v.pod.Name), zap.Error(err))
				t.renewAt = time.Now().Add(10 * time.Second)
			}
		}
		v.mu.Unlock()
	}
}

// mountArgv wraps argv so that, inside the container's mount namespace,
// the mounts are made before argv runs (exec'd, so the pid stays argv's).
func mountArgv(argv []string, mounts []bindMount) []string {
	if len(mounts) == 0 {
		return argv
	}
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, m := range mounts {
		src, dst := shellQuote(m.src), shellQuote(m.dst)
		fmt.Fprintf(&b, "mount --bind %s %s\n", src, dst)
		if m.readOnly {
			fmt.Fprintf(&b, "mount -o remount,bind,ro %s\n", dst)
		}
	}
	b.WriteString(`exec "$@"` + "\n")
	return append([]string{"/bin/sh", "-c", b.String(), "sh"}, argv...)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
