package main

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"
)

func nsOf(i int) string  { return fmt.Sprintf("bench-%02d", i%namespaces) }
func svcOf(i int) string { return fmt.Sprintf("svc-%05d", i) }
func hostOf(i int) string {
	return svcOf(i) + "." + nsOf(i) + ".example.com"
}

// kingress is what Serving makes for a Service with a 90/10 canary.
func kingress(i int) *v1alpha1.Ingress {
	ns, name := nsOf(i), svcOf(i)
	split := func(rev string, pct int) v1alpha1.IngressBackendSplit {
		return v1alpha1.IngressBackendSplit{
			IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: rev, ServicePort: intstr.FromInt32(80)},
			Percent:        pct,
			AppendHeaders:  map[string]string{"Knative-Serving-Revision": rev, "Knative-Serving-Namespace": ns},
		}
	}
	http := &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
		Splits: []v1alpha1.IngressBackendSplit{split(name+"-00001", 90), split(name+"-00002", 10)},
	}}}
	local := name + "." + ns
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{networking.IngressClassAnnotationKey: class}},
		Spec: v1alpha1.IngressSpec{HTTPOption: v1alpha1.HTTPOptionEnabled, Rules: []v1alpha1.IngressRule{{
			Hosts: []string{local, local + ".svc", local + ".svc.cluster.local"}, Visibility: v1alpha1.IngressVisibilityClusterLocal, HTTP: http,
		}, {
			Hosts: []string{hostOf(i)}, Visibility: v1alpha1.IngressVisibilityExternalIP, HTTP: http,
		}}},
	}
}

func services(i int) []*corev1.Service {
	var out []*corev1.Service
	for _, rev := range []string{"-00001", "-00002"} {
		out = append(out, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: nsOf(i), Name: svcOf(i) + rev},
			Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromInt32(8012),
			}}},
		})
	}
	return out
}

// populate creates the namespaces, the Services of every ingress (also of
// those created later) and the first n ingresses, concurrently.
func populate(ctx context.Context, kube kubernetes.Interface, kn clientset.Interface, n, extra int) error {
	for i := 0; i < namespaces; i++ {
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsOf(i)}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
	}
	return parallel(n+extra, func(i int) error {
		for _, s := range services(i) {
			if _, err := kube.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		if i >= n {
			return nil
		}
		_, err := kn.NetworkingV1alpha1().Ingresses(nsOf(i)).Create(ctx, kingress(i), metav1.CreateOptions{})
		return err
	})
}

func parallel(n int, f func(int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}
