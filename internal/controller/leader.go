package controller

import (
	"context"
	"crypto/rand"
	"os"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease the replicas compete for.
const LeaseName = "sluice-controller"

// RunLeaderElection makes this replica write status only while it holds
// the Lease. Every replica serves xDS either way.
func RunLeaderElection(ctx context.Context, log *zap.Logger, kube kubernetes.Interface, ns string, c *Controller) error {
	id, err := os.Hostname()
	if err != nil {
		return err
	}
	id += "-" + rand.Text()[:8]
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: LeaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			ReleaseOnCancel: true,
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					log.Info("leading: writing KIngress status", zap.String("id", id))
					c.SetLeader(true)
				},
				OnStoppedLeading: func() {
					log.Info("stopped leading", zap.String("id", id))
					c.SetLeader(false)
				},
			},
		})
	}
	return nil
}

// SetLeader turns status writing on or off. A new leader looks at every
// ingress once, since the last one may have left work undone.
func (c *Controller) SetLeader(on bool) {
	c.mu.Lock()
	c.leader = on
	c.mu.Unlock()
	if on {
		c.metrics.leader.Set(1)
	} else {
		c.metrics.leader.Set(0)
	}
	if !on {
		return
	}
	go func() {
		if !c.waitReady() {
			return
		}
		for _, k := range c.ourKeys() {
			c.statusQueue.Add(k)
		}
	}()
}

func (c *Controller) isLeader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// waitReady waits for the first publish; false if the queue shut down.
func (c *Controller) waitReady() bool {
	for !c.Ready() {
		if c.statusQueue.ShuttingDown() {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
