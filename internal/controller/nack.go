package controller

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/translator"
)

// checkRejections takes the ingresses behind standing NACKs out of the
// served state with Envoy's error as their reason (rollout.Book.Culprits
// decides which), and republishes: everyone else keeps the last good
// config plus all good changes.
//
// Only the leader decides, from the NACKs of every Envoy (its peers'
// too), and says so in the ingress's status; every replica then leaves
// that generation out (see rollout.StatusRejection), so all replicas keep
// serving the same content.
func (c *Controller) checkRejections() {
	if !c.isLeader() {
		return
	}
	c.mu.Lock()
	culprits := c.book.Culprits(c.table)
	for _, cu := range culprits {
		c.table.Set(cu.Piece)
	}
	c.mu.Unlock()
	if len(culprits) == 0 {
		return
	}
	var keys, why []string
	for _, cu := range culprits {
		keys, why = append(keys, cu.Key), append(why, cu.Why)
	}
	c.log.Warn("Envoy rejected the config of some ingresses; serving without them", zap.Strings("ingresses", keys), zap.Strings("why", why))
	c.metrics.quarantined.Add(float64(len(culprits)))
	c.requestPublish()
}

// injectNACK makes a translation Envoy rejects though it passes every
// check of ours (a domain listed twice in a virtual host): the e2e tests'
// way to prove that a NACK is isolated.
func injectNACK(p *translator.Piece) *translator.Piece {
	if p.Err != nil {
		return p
	}
	q := *p
	q.Routes = make([]*routev3.RouteConfiguration, len(p.Routes))
	for i, r := range p.Routes {
		c := proto.Clone(r).(*routev3.RouteConfiguration)
		for _, vh := range c.VirtualHosts {
			vh.Domains = append(vh.Domains, vh.Domains[0])
		}
		q.Routes[i] = c
	}
	q.Digest = p.Digest + "/nack"
	return &q
}
