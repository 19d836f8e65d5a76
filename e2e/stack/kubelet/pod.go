package kubelet

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// podWorker owns one pod (one UID): its network, its containers and its
// status.
type podWorker struct {
	k       *kubelet
	key     string
	uid     types.UID
	pod     *corev1.Pod // as first seen; the spec we run
	log     *zap.Logger
	net     *podNetwork
	vols    *podVolumes
	started metav1.Time

	runners []*containerRunner
	wake    chan struct{}    // buffered 1: some container state changed
	stopCh  chan stopRequest // buffered 1
	done    chan struct{}
	once    sync.Once
}

type stopRequest struct {
	grace time.Duration
	// deletePod deletes the Pod object once everything is gone, as the
	// kubelet finishes a graceful deletion.
	deletePod bool
}

func newPodWorker(k *kubelet, key string, pod *corev1.Pod) *podWorker {
	id := pod.UID
	if id == "" {
		id = types.UID(key) // only fake clientsets leave UIDs empty
	}
	ns := netnsName(k.cfg.NetnsPrefix, id)
	return &podWorker{
		k: k, key: key, uid: pod.UID, pod: pod.DeepCopy(),
		log:     k.log.With(zap.String("pod", key), zap.String("netns", ns)),
		net:     &podNetwork{netns: ns, veth: vethName(ns), subnet: k.subnet, gateway: k.gateway, bridge: k.cfg.Bridge},
		vols:    newPodVolumes(k, pod),
		started: metav1.Now().Rfc3339Copy(),
		wake:    make(chan struct{}, 1),
		stopCh:  make(chan stopRequest, 1),
		done:    make(chan struct{}),
	}
}

func (w *podWorker) requestStop(req stopRequest) {
	w.once.Do(func() { w.stopCh <- req })
}

func (w *podWorker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	var req stopRequest
	if w.startNetwork(ctx, &req) {
		req = w.supervise(ctx)
	}
	cleanup := context.WithoutCancel(ctx)
	for _, r := range w.runners {
		r.requestStop(req.grace)
	}
	for _, r := range w.runners {
		<-r.done
	}
	w.vols.remove()
	if w.net.ip != nil {
		w.net.teardown(cleanup)
		w.k.ipam.release(w.net.ip)
	}
	w.log.Info("pod stopped", zap.Bool("deletePod", req.deletePod))
	if req.deletePod {
		ctx, cancel := context.WithTimeout(cleanup, 30*time.Second)
		defer cancel()
		err := w.k.client.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      &metav1.Preconditions{UID: &w.uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.log.Warn("deleting pod", zap.Error(err))
		}
	}
}

// startNetwork allocates the pod IP and builds the namespace, retrying until
// it works or the pod is stopped. It reports whether the pod should run.
func (w *podWorker) startNetwork(ctx context.Context, req *stopRequest) bool {
	delay := time.Second
	for {
		err := w.setupNetwork(ctx)
		if err == nil {
			return true
		}
		w.log.Error("pod network setup failed", zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case *req = <-w.stopCh:
			t.Stop()
			return false
		case <-ctx.Done():
			t.Stop()
			return false
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func (w *podWorker) setupNetwork(ctx context.Context) error {
	if w.net.ip == nil {
		// Keep the address from a previous run of the kubelet if we can, so
		// endpoints stay put.
		if prev := net.ParseIP(w.pod.Status.PodIP); prev != nil && w.k.ipam.reserve(prev) {
			w.net.ip = prev.To4()
		} else {
			ip, err := w.k.ipam.allocate()
			if err != nil {
				return err
			}
			w.net.ip = ip
		}
	}
	hosts := hostsFile(w.pod, w.net.ip, w.k.cfg.ExtraHosts)
	return w.net.setup(ctx, hosts, resolvConf(w.pod, w.k.cfg.Nameserver))
}

// supervise starts the containers and writes status until a stop request.
func (w *podWorker) supervise(ctx context.Context) stopRequest {
	w.log.Info("pod network ready", zap.Stringer("ip", w.net.ip))
	for i := range w.pod.Spec.Containers {
		w.runners = append(w.runners, newContainerRunner(w.k, w.pod, &w.pod.Spec.Containers[i], w.net.netns, w.net.ip.String(), w.vols, w.poke))
	}
	w.writeStatus(ctx)
	for _, r := range w.runners {
		go r.run(ctx)
	}
	for {
		select {
		case <-w.wake:
			w.writeStatus(ctx)
		case req := <-w.stopCh:
			return req
		case <-ctx.Done():
			return stopRequest{grace: 2 * time.Second}
		}
	}
}

func (w *podWorker) writeStatus(ctx context.Context) {
	pods := w.k.client.CoreV1().Pods(w.pod.Namespace)
	fresh := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur *corev1.Pod
		var err error
		if !fresh {
			cur, err = w.k.lister.Pods(w.pod.Namespace).Get(w.pod.Name)
		}
		if fresh || err != nil {
			cur, err = pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
		}
		fresh = true
		if err != nil {
			return err
		}
		if cur.UID != w.uid {
			return nil
		}
		st := w.buildStatus(cur)
		if apiequality.Semantic.DeepEqual(&cur.Status, st) {
			return nil
		}
		upd := cur.DeepCopy()
		upd.Status = *st
		_, err = pods.UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		w.log.Warn("updating pod status", zap.Error(err))
		// Try again later; the next container change would too.
		time.AfterFunc(2*time.Second, w.poke)
	}
}

// buildStatus computes the pod status from the containers' states, keeping
// what others wrote (e.g. readiness-gate conditions).
func (w *podWorker) buildStatus(cur *corev1.Pod) *corev1.PodStatus {
	st := cur.Status.DeepCopy()
	hostIP := w.k.hostIP
	st.HostIP, st.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
	if w.net.ip != nil {
		ip := w.net.ip.String()
		st.PodIP, st.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
	if st.StartTime == nil {
		st.StartTime = &w.started
	}
	st.ObservedGeneration = cur.Generation

	var notReady []string
	var waiting, running, succeeded, failed int
	st.ContainerStatuses = st.ContainerStatuses[:0]
	for _, r := range w.runners {
		s := r.snapshot()
		started := s.started
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: r.spec.Name, Image: r.spec.Image, ImageID: s.imageID, ContainerID: s.id,
			State: s.state, LastTerminationState: s.lastState,
			Ready: s.ready, Started: &started, RestartCount: s.restarts,
		})
		if !s.ready {
			notReady = append(notReady, r.spec.Name)
		}
		switch {
		case s.state.Running != nil:
			running++
		case s.state.Terminated != nil && willRestart(w.pod.Spec.RestartPolicy, s.state.Terminated.ExitCode):
			running++ // exited, about to restart: the pod is not done
		case s.state.Terminated != nil:
			if s.state.Terminated.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		case s.lastState.Terminated != nil:
			running++ // in back-off between restarts
		default:
			waiting++
		}
	}
	switch {
	case st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed:
		// Terminal phases are final.
	case len(w.runners) == 0 || waiting > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case failed > 0:
		st.Phase = corev1.PodFailed
	default:
		st.Phase = corev1.PodSucceeded
	}

	now := metav1.Now().Rfc3339Copy()
	set := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg,
			LastTransitionTime: now, ObservedGeneration: cur.Generation}
		if ok {
			c = corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now, ObservedGeneration: cur.Generation}
		}
		for i := range st.Conditions {
			if st.Conditions[i].Type == t {
				if st.Conditions[i].Status == c.Status {
					c.LastTransitionTime = st.Conditions[i].LastTransitionTime
				}
				st.Conditions[i] = c
				return
			}
		}
		st.Conditions = append(st.Conditions, c)
	}
	containersReady := len(w.runners) > 0 && len(notReady) == 0
	reason, msg := "", ""
	if !containersReady {
		reason, msg = "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	}
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		containersReady, reason, msg = false, "PodCompleted", ""
	}
	ready, readyReason, readyMsg := containersReady, reason, msg
	if ready {
		if missing := unmetGates(w.pod, st.Conditions); len(missing) > 0 {
			ready, readyReason = false, "ReadinessGatesNotReady"
			readyMsg = fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", missing[0])
		}
	}
	set(corev1.PodReadyToStartContainers, true, "", "")
	set(corev1.PodInitialized, true, "", "")
	set(corev1.ContainersReady, containersReady, reason, msg)
	set(corev1.PodReady, ready, readyReason, readyMsg)
	set(corev1.PodScheduled, true, "", "")
	return st
}

func unmetGates(pod *corev1.Pod, conds []corev1.PodCondition) []string {
	var missing []string
	for _, g := range pod.Spec.ReadinessGates {
		ok := false
		for _, c := range conds {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			missing = append(missing, string(g.ConditionType))
		}
	}
	return missing
}

// willRestart says whether a container that exited with code is started
// again under policy, as the kubelet decides: then its pod is not done.
func willRestart(policy corev1.RestartPolicy, code int32) bool {
	return policy == "" || policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && code != 0)
}
