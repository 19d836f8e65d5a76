package kubelet

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Service account tokens of projected volumes: requested from the API
// server for the pod's service account, bound to the pod, renewed at 80 %
// of their lifetime (or 24 h), as a kubelet does.

// defaultTokenSeconds is a projected token's lifetime when the pod does not
// say (the API's default).
const defaultTokenSeconds = 3600

// tokenFile is a projected service account token and when to renew it.
type tokenFile struct {
	path    string
	src     *corev1.ServiceAccountTokenProjection
	mode    os.FileMode
	renewAt time.Time
}

// startTokens writes the tokens of a projected volume.
func (v *podVolumes) startTokens(ctx context.Context, vol *volume) error {
	p := vol.spec.Projected
	if p == nil {
		return nil
	}
	for _, src := range p.Sources {
		if src.ServiceAccountToken == nil {
			continue
		}
		t := &tokenFile{path: filepath.Join(vol.path, src.ServiceAccountToken.Path), src: src.ServiceAccountToken, mode: fileMode(nil, p.DefaultMode)}
		if err := v.writeToken(ctx, t); err != nil {
			return err
		}
		vol.tokens = append(vol.tokens, t)
	}
	return nil
}

// renewTokens renews the tokens of a volume that are due. v.mu is held.
func (v *podVolumes) renewTokens(ctx context.Context, vol *volume) {
	for _, t := range vol.tokens {
		if time.Now().Before(t.renewAt) {
			continue
		}
		if err := v.writeToken(ctx, t); err != nil && ctx.Err() == nil {
			v.k.log.Warn("renewing a service account token", zap.String("pod", v.pod.Namespace+"/"+v.pod.Name), zap.Error(err))
			t.renewAt = time.Now().Add(10 * time.Second)
		}
	}
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
		return err
	}
	if err := writeFile(filepath.Dir(t.path), filepath.Base(t.path), []byte(tr.Status.Token), t.mode); err != nil {
		return err
	}
	life := min(tr.Status.ExpirationTimestamp.Sub(issued), 24*time.Hour)
	t.renewAt = issued.Add(life * 8 / 10)
	return nil
}
