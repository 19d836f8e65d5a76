package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// runBinder stands in for kube-scheduler: there is one node, so every
// unbound pod of the default scheduler goes to it if its resource requests
// fit what the node's pods leave; one that does not is marked
// Unschedulable, as the scheduler does, and tried again later.
func (s *Stack) runBinder(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(s.Client, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
		}))
	pods := factory.Core().V1().Pods()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "binder"})
	defer queue.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	if _, err := pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return nil
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		key, quit := queue.Get()
		if quit {
			return nil
		}
		err := s.bind(ctx, pods.Lister(), key)
		if errors.Is(err, errUnschedulable) {
			queue.AddAfter(key, 10*time.Second)
		} else if err != nil && ctx.Err() == nil {
			s.logf("warning: binding %s: %v", key, err)
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

func (s *Stack) bind(ctx context.Context, lister listersv1.PodLister, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil ||
		(pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName) {
		return nil
	}
	if err := s.fits(ctx, pod); err != nil {
		return err
	}
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
	}
	err = s.Client.CoreV1().Pods(ns).Bind(ctx, b, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // bound meanwhile, or gone
	}
	if err != nil {
		return fmt.Errorf("bind to %s: %w", NodeName, err)
	}
	return nil
}

var errUnschedulable = errors.New("unschedulable")

// fits checks the pod's requests against what the node's other pods leave
// of its allocatable CPU and memory; a pod that does not fit gets the
// scheduler's PodScheduled=False condition.
func (s *Stack) fits(ctx context.Context, pod *corev1.Pod) error {
	node, err := s.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	onNode, err := s.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", NodeName).String()})
	if err != nil {
		return err
	}
	used := corev1.ResourceList{}
	for i := range onNode.Items {
		p := &onNode.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		addResources(used, podRequests(p))
	}
	var short []string
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		want := podRequests(pod)[r]
		free := node.Status.Allocatable[r].DeepCopy()
		free.Sub(used[r])
		if want.Cmp(free) > 0 {
			short = append(short, "Insufficient "+string(r))
		}
	}
	if len(short) == 0 {
		return nil
	}
	msg := fmt.Sprintf("0/1 nodes are available: 1 %s.", strings.Join(short, ", 1 "))
	cur := pod.DeepCopy()
	cond := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: msg, LastTransitionTime: metav1.Now()}
	replaced := false
	for i, c := range cur.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			if c.Status == cond.Status && c.Message == cond.Message {
				return errUnschedulable
			}
			cur.Status.Conditions[i], replaced = cond, true
		}
	}
	if !replaced {
		cur.Status.Conditions = append(cur.Status.Conditions, cond)
	}
	if _, err := s.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return errUnschedulable
}

// podRequests sums a pod's container requests, or its largest init
// container's if larger, plus its overhead, as the scheduler does.
func podRequests(p *corev1.Pod) corev1.ResourceList {
	out := corev1.ResourceList{}
	for _, c := range p.Spec.Containers {
		addResources(out, c.Resources.Requests)
	}
	for _, c := range p.Spec.InitContainers {
		for r, q := range c.Resources.Requests {
			if cur := out[r]; q.Cmp(cur) > 0 {
				out[r] = q.DeepCopy()
			}
		}
	}
	addResources(out, p.Spec.Overhead)
	return out
}

func addResources(to, add corev1.ResourceList) {
	for r, q := range add {
		cur := to[r]
		cur.Add(q)
		to[r] = cur
	}
}
