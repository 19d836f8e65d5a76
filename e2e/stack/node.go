package stack

import (
	"context"
	"fmt"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const leaseSeconds = 40

// NodeCPU is the node's allocatable CPU.
const NodeCPU = "8"

// registerNode creates the one Node the pod runner binds pods to (the
// endpoint controllers skip pods on unknown nodes) and keeps its Lease and
// Ready condition fresh until ctx ends, as a kubelet would.
func (s *Stack) registerNode(ctx, bgCtx context.Context) error {
	cs := s.Client
	now := metav1.Now()
	// Over-committed as a dense node is: the pods' processes share this
	// machine's cores, and requests only decide what fits (see bind).
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(NodeCPU),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: s.opts.Subnet, PodCIDRs: []string{s.opts.Subnet}},
	}
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("registering node %s: %w", NodeName, err)
	}
	created.Status = corev1.NodeStatus{
		Capacity:    res,
		Allocatable: res,
		Phase:       corev1.NodeRunning,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: s.BridgeIP},
			{Type: corev1.NodeHostName, Address: NodeName},
		},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "sluice stack pod runner", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo:        corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "v1.35.4"},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(s.opts.Ports.Kubelet)}},
	}
	ready, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("setting node %s Ready: %w", NodeName, err)
	}
	// The node lifecycle controller would lift this taint once the node is
	// Ready; it does not run here.
	ready.Spec.Taints = slices.DeleteFunc(ready.Spec.Taints, func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady })
	if _, err := cs.CoreV1().Nodes().Update(ctx, ready, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node %s: lifting the not-ready taint: %w", NodeName, err)
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: NodeName, Namespace: corev1.NamespaceNodeLease,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: NodeName, UID: created.UID}},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(NodeName),
			LeaseDurationSeconds: ptr.To[int32](leaseSeconds),
			RenewTime:            &metav1.MicroTime{Time: time.Now()},
		},
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node lease: %w", err)
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		s.heartbeat(bgCtx)
	}()
	s.logf("node %s registered (InternalIP %s)", NodeName, s.BridgeIP)
	return nil
}

func (s *Stack) heartbeat(ctx context.Context) {
	leases := s.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	nodes := s.Client.CoreV1().Nodes()
	tick := time.NewTicker(leaseSeconds * time.Second / 4)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if l, err := leases.Get(ctx, NodeName, metav1.GetOptions{}); err == nil {
			l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				s.logf("warning: renewing node lease: %v", err)
			}
		}
		if n%4 != 0 { // the Ready condition is refreshed less often, like a kubelet's status
			continue
		}
		if node, err := nodes.Get(ctx, NodeName, metav1.GetOptions{}); err == nil {
			for i := range node.Status.Conditions {
				if node.Status.Conditions[i].Type == corev1.NodeReady {
					node.Status.Conditions[i].LastHeartbeatTime = metav1.Now()
				}
			}
			if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
				s.logf("warning: node heartbeat: %v", err)
			}
		}
	}
}
