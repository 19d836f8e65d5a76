package stack

import "context"

// startPodRunner starts the pod runner (package e2e/stack/kubelet), which
// binds Pods to the node, runs them in network namespaces on the bridge and
// reports their status.
func (s *Stack) startPodRunner(ctx context.Context) error {
	if s.opts.SkipPods {
		s.PodsSkipReason = "asked to skip"
		return nil
	}
	// POD RUNNER CALL SITE: wire kubelet.Run(ctx, kubelet.Config{...}) here
	// once package sluice.dev/sluice/e2e/stack/kubelet provides it.
	s.PodsSkipReason = "the pod runner (e2e/stack/kubelet) is not wired in yet"
	s.logf("pod runner skipped: %s", s.PodsSkipReason)
	return nil
}
