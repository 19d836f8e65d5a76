package kubelet

import (
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func statusWorker(pod *corev1.Pod, states ...containerState) *podWorker {
	w := &podWorker{
		k:   &kubelet{hostIP: "10.1.2.1"},
		pod: pod,
		net: &podNetwork{ip: net.ParseIP("10.1.2.7").To4()},
	}
	for i := range states {
		w.runners = append(w.runners, &containerRunner{spec: &corev1.Container{Name: string(rune('a' + i)), Image: "runtime"}, st: states[i]})
	}
	return w
}

var (
	running    = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	creating   = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	backingOff = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	exited0    = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
	exited1    = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}
)

func cond(st *corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c.Status
		}
	}
	return ""
}

func TestBuildStatus(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Generation: 3}}
	cases := []struct {
		name   string
		policy corev1.RestartPolicy
		states []containerState
		phase  corev1.PodPhase
		ready  corev1.ConditionStatus
	}{
		{"starting", "", []containerState{{state: creating}}, corev1.PodPending, corev1.ConditionFalse},
		{"running unready", corev1.RestartPolicyAlways, []containerState{{state: running, started: true}}, corev1.PodRunning, corev1.ConditionFalse},
		{"running ready", corev1.RestartPolicyAlways, []containerState{{state: running, started: true, ready: true}}, corev1.PodRunning, corev1.ConditionTrue},
		{"one of two ready", corev1.RestartPolicyAlways, []containerState{{state: running, ready: true}, {state: running}}, corev1.PodRunning, corev1.ConditionFalse},
		{"crash loop", corev1.RestartPolicyAlways, []containerState{{state: backingOff, lastState: exited1}}, corev1.PodRunning, corev1.ConditionFalse},
		{"completed", corev1.RestartPolicyNever, []containerState{{state: exited0}}, corev1.PodSucceeded, corev1.ConditionFalse},
		{"failed", corev1.RestartPolicyNever, []containerState{{state: exited1}, {state: exited0}}, corev1.PodFailed, corev1.ConditionFalse},
		{"completed, not restarted", corev1.RestartPolicyOnFailure, []containerState{{state: exited0}}, corev1.PodSucceeded, corev1.ConditionFalse},
		// Exited and about to restart: not a terminal phase, or its
		// ReplicaSet would replace it.
		{"exited, to restart", corev1.RestartPolicyAlways, []containerState{{state: exited1}}, corev1.PodRunning, corev1.ConditionFalse},
		{"failed, to restart", corev1.RestartPolicyOnFailure, []containerState{{state: exited1}}, corev1.PodRunning, corev1.ConditionFalse},
	}
	for _, c := range cases {
		pod.Spec.RestartPolicy = c.policy
		st := statusWorker(pod, c.states...).buildStatus(pod)
		if st.Phase != c.phase || cond(st, corev1.PodReady) != c.ready || cond(st, corev1.ContainersReady) != c.ready {
			t.Errorf("%s: phase %s ready %s, want %s %s", c.name, st.Phase, cond(st, corev1.PodReady), c.phase, c.ready)
		}
		if st.PodIP != "10.1.2.7" || st.HostIP != "10.1.2.1" || len(st.ContainerStatuses) != len(c.states) || st.ObservedGeneration != 3 {
			t.Errorf("%s: ips %s/%s, %d container statuses, generation %d", c.name, st.PodIP, st.HostIP, len(st.ContainerStatuses), st.ObservedGeneration)
		}
		if cond(st, corev1.PodScheduled) != corev1.ConditionTrue || cond(st, corev1.PodInitialized) != corev1.ConditionTrue {
			t.Errorf("%s: conditions %+v", c.name, st.Conditions)
		}
	}
}

func TestBuildStatusKeepsTransitionTimesAndGates(t *testing.T) {
	old := metav1.Unix(1000, 0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"},
		Spec:       corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.test/gate"}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: old},
		}},
	}
	w := statusWorker(pod, containerState{state: running, started: true, ready: true})
	st := w.buildStatus(pod)
	if cond(st, corev1.ContainersReady) != corev1.ConditionTrue || cond(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("gate not honoured: %+v", st.Conditions)
	}
	for _, c := range st.Conditions {
		if c.Type == corev1.ContainersReady && !c.LastTransitionTime.Equal(&old) {
			t.Errorf("unchanged condition got a new transition time %v", c.LastTransitionTime)
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: "example.test/gate", Status: corev1.ConditionTrue})
	st = w.buildStatus(pod)
	if cond(st, corev1.PodReady) != corev1.ConditionTrue || cond(st, "example.test/gate") != corev1.ConditionTrue {
		t.Errorf("gate met but pod not Ready, or the gate's condition was dropped: %+v", st.Conditions)
	}
}
