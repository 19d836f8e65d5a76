package kubelet

import (
	"context"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestRealAPIServer runs the kubelet against a real API server given by
// SLUICE_KUBELET_KUBECONFIG (a throwaway one: it creates the namespace
// kubelet-check), to check the API accepts its status writes and that a
// graceful deletion completes.
func TestRealAPIServer(t *testing.T) {
	needRoot(t)
	kc := os.Getenv("SLUICE_KUBELET_KUBECONFIG")
	if kc == "" {
		t.Skip("skipping: set SLUICE_KUBELET_KUBECONFIG to a throwaway API server")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(rc)
	ctx := context.Background()
	const ns = "kubelet-check"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	images := buildImages(t, "runtime")
	startKubelet(t, Config{RestConfig: rc, Images: map[string]string{"runtime": images["runtime"], "crasher": "/bin/false"}})
	pods := client.CoreV1().Pods(ns)
	mk := func(name, image string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: "node-test", Containers: []corev1.Container{{
				Name: "foo", Image: image,
				Env:            []corev1.EnvVar{{Name: "PORT", Value: "8080"}, {Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(8080)}}, PeriodSeconds: 1},
			}}},
		}
	}
	for _, p := range []*corev1.Pod{mk("web", "runtime"), mk("crash", "crasher")} {
		_ = pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "web Ready", 30*time.Second, func() (bool, error) {
		p, err := pods.Get(ctx, "web", metav1.GetOptions{})
		return err == nil && podCondition(p, corev1.PodReady) == corev1.ConditionTrue, err
	})
	waitFor(t, "crash restarting", 30*time.Second, func() (bool, error) {
		p, err := pods.Get(ctx, "crash", metav1.GetOptions{})
		return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 2, err
	})
	p, _ := pods.Get(ctx, "web", metav1.GetOptions{})
	t.Logf("web status: phase %s ip %s conditions %+v", p.Status.Phase, p.Status.PodIP, p.Status.Conditions)
	for _, name := range []string{"web", "crash"} {
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for _, name := range []string{"web", "crash"} {
		waitFor(t, name+" deleted", 40*time.Second, func() (bool, error) {
			_, err := pods.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
	}
	t.Logf("graceful deletions completed in %s", time.Since(start))
}
