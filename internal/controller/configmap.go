package controller

import (
	"reflect"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"sluice.dev/sluice/translator"
)

// config-sluice (read over the flags' defaults), config-network and the CAs
// of system-internal TLS: a bad one refused with the last good config kept,
// a new one re-translating every ingress.

func (c *Controller) isDefaultCert(m metav1.Object) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, isSecret := m.(*corev1.Secret)
	return isSecret && c.cfg.DefaultCertificate == m.GetNamespace()+"/"+m.GetName()
}

// configChanged reloads the configuration; a new one re-translates every
// ingress.
func (c *Controller) configChanged() {
	if !c.loadConfig() {
		return
	}
	for _, k := range c.ourKeys() {
		c.queue.Add(k)
	}
	c.requestPublish()
}

// isConfig: the ConfigMaps of the system namespace that shape the
// translation.
func isConfig(m metav1.Object) bool {
	_, bundle := m.GetLabels()[translator.TrustBundleLabel]
	return bundle || m.GetName() == translator.ConfigMapName || m.GetName() == configNetwork
}

const configNetwork = "config-network"

// loadConfig reads config-sluice over the defaults, config-network's
// system-internal-tls and the CAs it trusts. A bad ConfigMap keeps the last
// good config and is logged. It reports whether the table was rebuilt: not
// when nothing changed.
func (c *Controller) loadConfig() bool {
	ns := c.opts.SystemNamespace
	cfg := c.opts.Translator
	cm, err := c.cmLister.ConfigMaps(ns).Get(translator.ConfigMapName)
	if err == nil {
		cfg, err = translator.ConfigFromMapOver(c.opts.Translator, cm.Data)
		if err != nil {
			c.log.Error("config-sluice rejected, keeping the last good config", zap.Error(err))
			return false
		}
	}
	if cm, err := c.cmLister.ConfigMaps(ns).Get(configNetwork); err == nil {
		if cfg.SystemInternalTLS, err = translator.SystemInternalTLS(cm.Data); err != nil {
			c.log.Error("config-network rejected, keeping the last good config", zap.Error(err))
			return false
		}
	}
	routing, _ := c.caLister.Secrets(ns).Get(translator.RoutingCertSecret)
	var problems []string
	cfg.InternalCA, problems = translator.TrustBundle(routing, c.trustBundles(ns))
	for _, p := range problems {
		c.log.Warn("CA for system-internal-tls left out", zap.String("problem", p))
	}
	def, derr := translator.DefaultSecret(&cfg, lookup{c})
	if derr != nil {
		c.log.Error("default certificate not served", zap.Error(derr))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if reflect.DeepEqual(cfg, c.cfg) && proto.Equal(def, c.def) {
		return false
	}
	c.cfg, c.def = cfg, def
	// A fresh table with every piece kept: pieces are re-translated by the
	// reconciles queued by the caller.
	t := translator.NewTable(cfg, def)
	for _, k := range c.table.Keys() {
		p, _ := c.table.Get(k)
		t.Set(p)
	}
	c.table = t
	return true
}

// trustBundles are the ConfigMaps of ns labelled as trust bundles.
func (c *Controller) trustBundles(ns string) []*corev1.ConfigMap {
	all, _ := c.cmLister.ConfigMaps(ns).List(labels.Everything())
	var out []*corev1.ConfigMap
	for _, cm := range all {
		if _, ok := cm.Labels[translator.TrustBundleLabel]; ok {
			out = append(out, cm)
		}
	}
	return out
}
