// Package workload creates backends and KIngresses on the local stack, for
// the e2e tests and `make demo`.
package workload

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/stack/kubelet"
)

// Class is Sluice's ingress class.
const Class = "sluice.ingress.networking.knative.dev"

// NodeName is the node the stack's pod runner serves.
const NodeName = "sluice-node"

// BackendImage is the e2e backend (e2e/cmd/backend).
const BackendImage = "sluice-backend"

// KnativeBackendImage is the same backend under a name Knative Serving runs
// without resolving it to a digest.
const KnativeBackendImage = "ko.local/sluice/backend"

// Images builds what the pod runner may start, into root/bin/images: the
// Knative networking test images and the e2e backend (under both its
// names), and returns image name -> binary.
func Images(ctx context.Context, root string) (map[string]string, error) {
	dir := filepath.Join(root, "bin", "images")
	images, err := kubelet.BuildTestImages(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(dir, BackendImage)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./e2e/cmd/backend")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the backend: %v: %s", err, b)
	}
	images[BackendImage] = out
	images[KnativeBackendImage] = out
	return images, nil
}

// Service creates a Service selecting app=name.
func Service(ctx context.Context, kube kubernetes.Interface, ns, name string, ports ...corev1.ServicePort) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: ports},
	}
	_, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	return err
}

// HTTPPort is a revision Service's http port: 80, named http, to 8080.
func HTTPPort() corev1.ServicePort {
	return corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}
}

// Pod runs one pod labelled app=app on the stack's node, listening on
// 8080 and ready once its readiness probe passes (HTTP for the e2e backend,
// TCP for other images).
func Pod(ctx context.Context, kube kubernetes.Interface, ns, podName, app, image string, env map[string]string) error {
	probe := corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(8080)}}
	if image != BackendImage {
		probe = corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(8080)}}
	}
	envs := []corev1.EnvVar{{Name: "PORT", Value: "8080"}}
	for k, v := range env {
		envs = append(envs, corev1.EnvVar{Name: k, Value: v})
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: ns, Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			NodeName: NodeName,
			Containers: []corev1.Container{{
				Name: "backend", Image: image, Env: envs,
				Ports:          []corev1.ContainerPort{{ContainerPort: 8080, Name: "http"}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: probe, PeriodSeconds: 1},
			}},
		},
	}
	_, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	return err
}

// Backend is a Service with replicas pods of the e2e backend, each saying
// its name is the Service's name.
func Backend(ctx context.Context, kube kubernetes.Interface, ns, name string, replicas int) error {
	if err := Service(ctx, kube, ns, name, HTTPPort()); err != nil {
		return fmt.Errorf("service %s: %w", name, err)
	}
	for i := 0; i < replicas; i++ {
		if err := Pod(ctx, kube, ns, fmt.Sprintf("%s-%d", name, i), name, BackendImage, map[string]string{"NAME": name}); err != nil {
			return fmt.Errorf("pod %s-%d: %w", name, i, err)
		}
	}
	return nil
}

// ReadyEndpoints counts the ready addresses of a Service's EndpointSlices.
func ReadyEndpoints(ctx context.Context, kube kubernetes.Interface, ns, svc string) (int, error) {
	slices, err := kube.DiscoveryV1().EndpointSlices(ns).List(ctx,
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return 0, err
	}
	ready := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				ready += len(e.Addresses)
			}
		}
	}
	return ready, nil
}

// Poll calls f until it returns nil or timeout passes.
func Poll(ctx context.Context, timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitEndpoints waits until svc has exactly n ready endpoints.
func WaitEndpoints(ctx context.Context, kube kubernetes.Interface, ns, svc string, n int, timeout time.Duration) error {
	return Poll(ctx, timeout, func() error {
		got, err := ReadyEndpoints(ctx, kube, ns, svc)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("%s has %d ready endpoints, want %d", svc, got, n)
		}
		return nil
	})
}

// Ingress returns a KIngress of Sluice's class.
func Ingress(ns, name string, spec v1alpha1.IngressSpec) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: Class}},
		Spec: spec,
	}
}

// WaitReady waits until the ingress's generation gen is Ready.
func WaitReady(ctx context.Context, kn clientset.Interface, ns, name string, gen int64, timeout time.Duration) (*v1alpha1.Ingress, error) {
	var cur *v1alpha1.Ingress
	err := Poll(ctx, timeout, func() error {
		var err error
		cur, err = kn.NetworkingV1alpha1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Generation != gen {
			return fmt.Errorf("generation moved on to %d", cur.Generation)
		}
		if !cur.IsReady() {
			return fmt.Errorf("ingress %s not ready: %+v", name, cur.Status.Conditions)
		}
		return nil
	})
	return cur, err
}

// EnsureNamespace creates ns and waits for its default ServiceAccount,
// which pods need.
func EnsureNamespace(ctx context.Context, kube kubernetes.Interface, name string) error {
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return Poll(ctx, time.Minute, func() error {
		_, err := kube.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}
