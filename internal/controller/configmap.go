package controller

import (
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sluice.dev/sluice/translator"
)

// config-sluice: read over the flags' defaults, a bad one refused with the
// last good config kept, a new one re-translating every ingress.

func (c *Controller) isDefaultCert(m metav1.Object) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, isSecret := m.(*corev1.Secret)
	return isSecret && c.cfg.DefaultCertificate == m.GetNamespace()+"/"+m.GetName()
}

// configChanged reloads config-sluice; a new config re-translates every
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

// loadConfig reads config-sluice over the defaults. A bad ConfigMap keeps
// the last good config and is logged. It reports whether the table was
// rebuilt.
func (c *Controller) loadConfig() bool {
	cfg := c.opts.Translator
	cm, err := c.cmLister.ConfigMaps(c.opts.SystemNamespace).Get(translator.ConfigMapName)
	if err == nil {
		cfg, err = translator.ConfigFromMapOver(c.opts.Translator, cm.Data)
		if err != nil {
			c.log.Error("config-sluice rejected, keeping the last good config", zap.Error(err))
			return false
		}
	}
	def, derr := translator.DefaultSecret(&cfg, lookup{c})
	if derr != nil {
		c.log.Error("default certificate not served", zap.Error(derr))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cfg = cfg
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
