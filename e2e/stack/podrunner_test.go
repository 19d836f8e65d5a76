//go:build e2e

package stack

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The pod runner against the real API server, under the churn Knative
// Serving makes: many pods created and deleted at once, by a ReplicaSet
// and by hand, names reused. Every pod must start (Ready, answering from
// its own namespace) and stop (gone from the API, namespace removed); a
// crash loop's status is accepted and its deletion completes.
func TestPodRunnerChurn(t *testing.T) {
	ctx, s := startPodStack(t, 8*time.Minute)
	const n = 30
	grace := int64(5) // the pod runner, not the API server, ends each deletion
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: &grace,
		Containers:                    []corev1.Container{runtimeContainer()},
	}
	pods := s.Client.CoreV1().Pods(TestNS)

	// By hand: n pods created at once, deleted at once, twice with the
	// same names (a new pod of a name while the old one may still stop).
	for round := 1; round <= 2; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%d", i), Namespace: TestNS,
					Labels: map[string]string{"churn": "hand"}}, Spec: *spec.DeepCopy()}
				if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: create: %v", round, err)
		}
		start := time.Now()
		checkAllServe(ctx, t, s, "churn=hand", n)
		t.Logf("round %d: %d pods created at once all Ready and answering in %v", round, n, time.Since(start).Round(time.Millisecond))
		start = time.Now()
		if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "churn=hand"}); err != nil {
			t.Fatal(err)
		}
		checkAllGone(ctx, t, s, "churn=hand")
		t.Logf("round %d: %d pods deleted at once all stopped in %v", round, n, time.Since(start).Round(time.Millisecond))
	}

	// A container that keeps crashing: the API takes its restart counts,
	// and its deletion completes.
	crash := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: TestNS},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "/bin/false"}}}}
	if _, err := pods.Create(ctx, crash, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, "crash", metav1.GetOptions{})
		return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 2 &&
			p.Status.ContainerStatuses[0].LastTerminationState.Terminated != nil, nil
	})
	if err != nil {
		t.Fatalf("crash: no restarts recorded: %v", err)
	}
	if err := pods.Delete(ctx, "crash", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := pods.Get(ctx, "crash", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("crash: the deletion never completed: %v", err)
	}

	// By a ReplicaSet (a Deployment), as Serving scales a revision: up to
	// n, down to 0, twice.
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "churn", Namespace: TestNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"churn": "rs"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"churn": "rs"}}, Spec: spec},
		},
	}
	deps := s.Client.AppsV1().Deployments(TestNS)
	if _, err := deps.Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	scale := func(r int32) {
		t.Helper()
		patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, r)
		if _, err := deps.Patch(ctx, "churn", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for round := 1; round <= 2; round++ {
		start := time.Now()
		scale(n)
		checkAllServe(ctx, t, s, "churn=rs", n)
		t.Logf("round %d: scaled to %d, all Ready and answering in %v", round, n, time.Since(start).Round(time.Millisecond))
		start = time.Now()
		scale(0)
		checkAllGone(ctx, t, s, "churn=rs")
		t.Logf("round %d: scaled to 0, all stopped in %v", round, time.Since(start).Round(time.Millisecond))
	}
}

// checkAllServe waits until exactly n pods with the label are Ready, then
// checks each answers at its pod IP and has a network namespace.
func checkAllServe(ctx context.Context, t *testing.T, s *Stack, selector string, n int) {
	t.Helper()
	var ready []corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := s.Client.CoreV1().Pods(TestNS).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		ready = ready[:0]
		var waiting []string
		for _, p := range l.Items {
			if p.DeletionTimestamp == nil && p.Status.PodIP != "" && podReady(&p) {
				ready = append(ready, p)
			} else {
				waiting = append(waiting, p.Name)
			}
		}
		last = fmt.Sprintf("%d of %d Ready; waiting for %v", len(ready), len(l.Items), waiting)
		return len(ready) == n && len(l.Items) == n, nil
	})
	if err != nil {
		t.Fatalf("%s: %s (see %s)", selector, last, s.path("logs", "kubelet.log"))
	}
	netns, _ := run("ip", "netns", "list")
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	ips := map[string]string{}
	for _, p := range ready {
		if other, dup := ips[p.Status.PodIP]; dup {
			t.Errorf("%s and %s share the IP %s", p.Name, other, p.Status.PodIP)
		}
		ips[p.Status.PodIP] = p.Name
		resp, err := hc.Get("http://" + hostPort(p.Status.PodIP, 8080) + "/")
		if err != nil {
			t.Errorf("%s at %s: %v", p.Name, p.Status.PodIP, err)
			continue
		}
		resp.Body.Close()
	}
	if got := strings.Count(netns, PodNetnsPrefix); got < n {
		t.Errorf("%d pod network namespaces for %d pods", got, n)
	}
}

// checkAllGone waits until no pod with the label is left and no pod
// network namespace remains.
func checkAllGone(ctx context.Context, t *testing.T, s *Stack, selector string) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := s.Client.CoreV1().Pods(TestNS).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		netns, _ := run("ip", "netns", "list")
		left := strings.Count(netns, PodNetnsPrefix)
		var names []string
		for _, p := range l.Items {
			names = append(names, p.Name)
		}
		last = fmt.Sprintf("pods left %v, pod network namespaces left %d", names, left)
		return len(l.Items) == 0 && left == 0, nil
	})
	if err != nil {
		t.Fatalf("%s: %s (see %s)", selector, last, s.path("logs", "kubelet.log"))
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
