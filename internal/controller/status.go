package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"sluice.dev/sluice/internal/rollout"
)

// lbStatus is what Knative reads to reach the gateway: the Services'
// cluster-internal domains.
func (c *Controller) lbStatus() (public, private []v1alpha1.LoadBalancerIngressStatus) {
	dom := func(svc string) []v1alpha1.LoadBalancerIngressStatus {
		return []v1alpha1.LoadBalancerIngressStatus{{
			DomainInternal: fmt.Sprintf("%s.%s.svc.%s", svc, c.opts.SystemNamespace, c.opts.ClusterDomain),
		}}
	}
	return dom(c.opts.PublicService), dom(c.opts.PrivateService)
}

// desiredStatus is the status the table and the Envoys give one ingress
// (see rollout.Book.Check). ok is false when there is nothing to write
// yet: the table holds an older generation than the object (a reconcile
// is on its way), or the ingress is not yet served by every Envoy (Envoy
// events check it again) and has not waited NamePendingAfter; after that,
// its status names the Envoys it waits for.
func (c *Controller) desiredStatus(ing *v1alpha1.Ingress) (st *v1alpha1.IngressStatus, ok bool) {
	key := ing.Namespace + "/" + ing.Name
	c.mu.Lock()
	p, found := c.table.Get(key)
	tableErr := c.table.Status(key)
	published := c.published
	c.mu.Unlock()
	if !found || !published || p.Generation != ing.Generation {
		return nil, false
	}
	now := time.Now()
	v := c.book.Check(p, tableErr, now)
	if v.Took > 0 {
		c.metrics.propagation.Observe(v.Took.Seconds())
	}
	st = ing.Status.DeepCopy()
	st.InitializeConditions()
	st.ObservedGeneration = ing.Generation
	switch v.State {
	case rollout.Pending:
		if len(v.Behind) == 0 || v.Since.IsZero() || ing.IsReady() {
			return nil, false // Ready stays Ready while new Envoys catch up
		}
		if r := ing.Status.GetCondition(v1alpha1.IngressConditionReady); ing.Status.ObservedGeneration == ing.Generation && r != nil && r.Reason == reasonBehind {
			// Named once per generation: a write for each Envoy catching
			// up would cost the fleet's size per ingress.
			return nil, false
		}
		if left := c.opts.NamePendingAfter - now.Sub(v.Since); left > 0 {
			c.statusQueue.AddAfter(key, left) // an Envoy stopped for good sends no event
			return nil, false
		}
		st.MarkNetworkConfigured()
		ing.GetConditionSet().Manage(st).MarkUnknown(v1alpha1.IngressConditionLoadBalancerReady, reasonBehind, "%s", behindMessage(v.Behind))
		return st, true
	case rollout.Failed:
		ing.GetConditionSet().Manage(st).MarkFalse(v1alpha1.IngressConditionNetworkConfigured, v.Err.Reason, "%s", v.Err.Message)
		st.MarkLoadBalancerNotReady()
		return st, true
	}
	st.MarkNetworkConfigured()
	pub, priv := c.lbStatus()
	st.MarkLoadBalancerReady(pub, priv)
	return st, true
}

// updateStatus writes the status of one ingress through the status
// subresource, retrying on conflicts; only ingresses of our class are
// ever written.
func (c *Controller) updateStatus(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	ing, err := c.ingLister.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !c.ours(ing) || ing.DeletionTimestamp != nil || !c.isLeader() {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		want, ok := c.desiredStatus(ing)
		if !ok || equality.Semantic.DeepEqual(want, &ing.Status) {
			return nil
		}
		upd := ing.DeepCopy()
		upd.Status = *want
		_, err := c.kn.NetworkingV1alpha1().Ingresses(ns).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			// Read the latest from the API, not the cache, before retrying.
			latest, gerr := c.kn.NetworkingV1alpha1().Ingresses(ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(gerr) {
				return nil // deleted meanwhile: nothing to write
			}
			if gerr != nil {
				return gerr
			}
			if !c.ours(latest) {
				return nil
			}
			ing = latest
			return err
		}
		if err == nil {
			c.metrics.statusWrites.Inc()
			c.log.Debug("status written", zap.String("ingress", key), zap.Bool("ready", want.GetCondition(v1alpha1.IngressConditionReady).IsTrue()))
		}
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// watchEnvoys re-checks the ingresses waiting for Envoys whenever an Envoy
// ACKs, NACKs, connects or leaves.
func (c *Controller) watchEnvoys(ctx context.Context) {
	ch, cancel := c.sink.Subscribe()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		c.checkRejections()
		for _, k := range c.book.Waiting() {
			c.statusQueue.Add(k)
		}
	}
}

// reasonBehind is the reason of a KIngress waiting for Envoys.
const reasonBehind = "EnvoysBehind"

// behindMessage names the Envoys an ingress waits for, the first few.
func behindMessage(behind []string) string {
	const shown = 5
	envoys := "Envoys"
	if len(behind) == 1 {
		envoys = "Envoy"
	}
	msg := fmt.Sprintf("not served yet by %d %s: %s", len(behind), envoys, strings.Join(behind[:min(shown, len(behind))], ", "))
	if len(behind) > shown {
		msg += fmt.Sprintf(" and %d more", len(behind)-shown)
	}
	return msg
}
