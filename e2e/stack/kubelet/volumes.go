package kubelet

import (
	"bytes"
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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Volumes. Each volume of a pod is a directory on the host,
// <VolumeDir>/<pod uid>/<volume>, filled when the first container starts;
// a container sees it at its mountPath through a bind mount made in the
// container's own mount namespace, so nothing is mounted on the host.
// Supported: emptyDir, configMap, secret, downwardAPI, projected (those
// three and serviceAccountToken) and hostPath. As a kubelet does, the pod
// runner keeps the files in step with their ConfigMaps, Secrets and the
// pod's metadata (every refreshPeriod; a file mounted by subPath keeps its
// first content), and renews service account tokens at 80 % of their
// lifetime (tokens.go).

// refreshPeriod is how often volume contents are brought up to date.
const refreshPeriod = 5 * time.Second

type podVolumes struct {
	k   *kubelet
	pod *corev1.Pod
	dir string

	mu     sync.Mutex
	ready  bool
	vols   map[string]*volume
	cancel context.CancelFunc // stops the refresh
	// mountpoints this pod uses, and those of them the pod runner created
	mountpoints map[string]bool
	created     []string
}

// volume is one volume on the host.
type volume struct {
	spec   corev1.Volume
	path   string
	files  map[string]bool // the files written from the API, to remove when gone there
	tokens []*tokenFile
}

// volFile is a file a volume should hold.
type volFile struct {
	data []byte
	mode os.FileMode
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
		vol, ok := v.vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: the pod has no such volume", m.Name)
		}
		src := vol.path
		if m.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+m.SubPath))
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

// prepare fills every volume once; a failure (a missing ConfigMap, say) is
// retried on the next container start. Then the refresh starts.
func (v *podVolumes) prepare(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ready {
		return nil
	}
	vols := map[string]*volume{}
	for _, spec := range v.pod.Spec.Volumes {
		vol := &volume{spec: spec, path: filepath.Join(v.dir, spec.Name)}
		var err error
		switch s := spec.VolumeSource; {
		case s.HostPath != nil:
			vol.path = s.HostPath.Path
		case s.EmptyDir != nil:
			err = os.MkdirAll(vol.path, 0o777)
			if err == nil {
				err = os.Chmod(vol.path, 0o777) // writable by any user, as a runtime makes it
			}
		case s.ConfigMap != nil, s.Secret != nil, s.DownwardAPI != nil, s.Projected != nil:
			err = v.fill(ctx, vol)
			if err == nil {
				err = v.startTokens(ctx, vol)
			}
		default:
			err = errors.New("this volume type is not supported by the local pod runner (emptyDir, configMap, secret, downwardAPI, projected and hostPath are)")
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", spec.Name, err)
		}
		vols[spec.Name] = vol
	}
	v.vols, v.ready = vols, true
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v.cancel = cancel
	go v.refresh(rctx)
	return nil
}

// refresh keeps the API-backed volumes and the tokens current until ctx ends.
func (v *podVolumes) refresh(ctx context.Context) {
	t := time.NewTicker(refreshPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v.mu.Lock()
		for _, name := range slices.Sorted(maps.Keys(v.vols)) {
			vol := v.vols[name]
			if vol.files == nil {
				continue // not from the API
			}
			if err := v.fill(ctx, vol); err != nil && ctx.Err() == nil {
				v.k.log.Debug("refreshing a volume", zap.String("pod", v.pod.Namespace+"/"+v.pod.Name), zap.String("volume", name), zap.Error(err))
			}
			v.renewTokens(ctx, vol)
		}
		v.mu.Unlock()
	}
}

// remove stops the refresh and deletes the volumes' contents (never a
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

// fill writes what a volume should hold from the API and removes what it
// no longer should; unchanged files are left alone.
func (v *podVolumes) fill(ctx context.Context, vol *volume) error {
	want, err := v.contents(ctx, vol.spec.VolumeSource)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(vol.path, 0o755); err != nil {
		return err
	}
	for _, rel := range slices.Sorted(maps.Keys(want)) {
		f := want[rel]
		p := filepath.Join(vol.path, rel)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, f.data) {
			if st, err := os.Stat(p); err == nil && st.Mode().Perm() == f.mode {
				continue
			}
		}
		if err := writeFile(vol.path, rel, f.data, f.mode); err != nil {
			return err
		}
	}
	for rel := range vol.files {
		if _, ok := want[rel]; !ok {
			_ = os.Remove(filepath.Join(vol.path, rel))
		}
	}
	vol.files = map[string]bool{}
	for rel := range want {
		vol.files[rel] = true
	}
	return nil
}

// contents lists the files of a configMap, secret, downwardAPI or
// projected volume (its tokens apart).
func (v *podVolumes) contents(ctx context.Context, s corev1.VolumeSource) (map[string]volFile, error) {
	out := map[string]volFile{}
	var err error
	switch {
	case s.ConfigMap != nil:
		err = v.configMapFiles(ctx, out, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, s.ConfigMap.DefaultMode)
	case s.Secret != nil:
		err = v.secretFiles(ctx, out, s.Secret.SecretName, s.Secret.Items, s.Secret.Optional, s.Secret.DefaultMode)
	case s.DownwardAPI != nil:
		err = v.downwardFiles(out, s.DownwardAPI.Items, s.DownwardAPI.DefaultMode)
	case s.Projected != nil:
		for _, src := range s.Projected.Sources {
			switch {
			case src.ConfigMap != nil:
				err = v.configMapFiles(ctx, out, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, s.Projected.DefaultMode)
			case src.Secret != nil:
				err = v.secretFiles(ctx, out, src.Secret.Name, src.Secret.Items, src.Secret.Optional, s.Projected.DefaultMode)
			case src.DownwardAPI != nil:
				err = v.downwardFiles(out, src.DownwardAPI.Items, s.Projected.DefaultMode)
			case src.ServiceAccountToken != nil:
				// tokens.go
			default:
				err = errors.New("projected source not supported by the local pod runner")
			}
			if err != nil {
				break
			}
		}
	}
	return out, err
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
// file), refusing paths that leave dir.
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

// keyFiles adds data's keys (all of them, or the items) to out.
func keyFiles(out map[string]volFile, data map[string][]byte, items []corev1.KeyToPath, defMode *int32, what string) error {
	if len(items) == 0 {
		for k, b := range data {
			out[k] = volFile{b, fileMode(nil, defMode)}
		}
		return nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s has no key %s", what, it.Key)
		}
		out[it.Path] = volFile{b, fileMode(it.Mode, defMode)}
	}
	return nil
}

func (v *podVolumes) configMapFiles(ctx context.Context, out map[string]volFile, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	return objectFiles(out, "configmap "+name, items, optional, defMode, func() (map[string][]byte, error) {
		cm, err := v.k.client.CoreV1().ConfigMaps(v.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		maps.Copy(data, cm.BinaryData)
		return data, nil
	})
}

func (v *podVolumes) secretFiles(ctx context.Context, out map[string]volFile, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	return objectFiles(out, "secret "+name, items, optional, defMode, func() (map[string][]byte, error) {
		s, err := v.k.client.CoreV1().Secrets(v.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return s.Data, nil
	})
}

// objectFiles adds the keys of a ConfigMap or Secret (get reads it); an
// optional one that does not exist adds nothing.
func objectFiles(out map[string]volFile, what string, items []corev1.KeyToPath, optional *bool, defMode *int32, get func() (map[string][]byte, error)) error {
	data, err := get()
	if err != nil {
		if optional != nil && *optional {
			return nil
		}
		return err
	}
	return keyFiles(out, data, items, defMode, what)
}

// downwardFiles adds the downward API items, from the pod as it is now
// (labels and annotations change).
func (v *podVolumes) downwardFiles(out map[string]volFile, items []corev1.DownwardAPIVolumeFile, defMode *int32) error {
	pod := v.pod
	if cur, err := v.k.lister.Pods(pod.Namespace).Get(pod.Name); err == nil && cur.UID == pod.UID {
		pod = cur
	}
	for _, it := range items {
		var val string
		switch {
		case it.FieldRef != nil:
			var err error
			if val, err = downwardField(pod, it.FieldRef.FieldPath); err != nil {
				return err
			}
		case it.ResourceFieldRef != nil:
			val = "0" // no resource accounting here
		}
		out[it.Path] = volFile{[]byte(val), fileMode(it.Mode, defMode)}
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
