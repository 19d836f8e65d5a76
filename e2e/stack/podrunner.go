package stack

import (
	"context"
	"fmt"
	"maps"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sluice.dev/sluice/e2e/stack/kubelet"
)

// startPodRunner starts the pod binder and the pod runner (package
// e2e/stack/kubelet), which runs the node's pods as processes in network
// namespaces on the bridge and reports their status.
func (s *Stack) startPodRunner(ctx context.Context) error {
	if s.opts.SkipPods {
		s.PodsSkipReason = "asked to skip"
		return nil
	}
	images := s.opts.Images
	if images == nil {
		s.logf("building the conformance test images into %s (reused when current)", s.bin("images"))
		var err error
		if images, err = kubelet.BuildTestImages(ctx, s.bin("images")); err != nil {
			return fmt.Errorf("test images: %w", err)
		}
	}
	if s.opts.Serving {
		serving, err := ServingImages(s.opts.BinDir)
		if err != nil {
			return err
		}
		images = maps.Clone(images)
		maps.Copy(images, serving)
	}
	logCfg := zap.NewProductionConfig()
	logCfg.OutputPaths = []string{s.path("logs", "kubelet.log")}
	logCfg.ErrorOutputPaths = logCfg.OutputPaths
	logCfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	logCfg.Sampling = nil
	log, err := logCfg.Build()
	if err != nil {
		return err
	}
	// Pods reach both gateways by these names (the private load balancer's
	// domainInternal, as the conformance httpproxy dials it) at the bridge.
	hosts := map[string]string{}
	gateways := []string{InternalGWName, ExternalGWName}
	if s.opts.Chart {
		gateways = nil // cluster DNS finds the chart's Services
	}
	for _, svc := range gateways {
		for _, h := range []string{svc + "." + SystemNS, svc + "." + SystemNS + ".svc", svc + "." + SystemNS + ".svc.cluster.local"} {
			hosts[h] = s.BridgeIP
		}
	}
	cfg := kubelet.Config{
		RestConfig:  s.RESTConfig,
		NodeName:    NodeName,
		Bridge:      s.opts.Bridge,
		PodCIDR:     s.opts.Subnet,
		Gateway:     s.BridgeIP,
		Images:      images,
		ExtraHosts:  hosts,
		LogDir:      s.path("logs", "pods"),
		NetnsPrefix: PodNetnsPrefix,
		Nameserver:  s.BridgeIP,
		VolumeDir:   s.path("volumes"),
		API: kubelet.APIConfig{
			Address:  hostPort(s.BridgeIP, s.opts.Ports.Kubelet),
			CertFile: s.path("pki", "kubelet.crt"), KeyFile: s.path("pki", "kubelet.key"),
			ClientCAFile: s.path("pki", "ca.crt"),
		},
		Logger: log,

		UnreadyProbePeriod: s.opts.UnreadyProbePeriod,
	}
	s.bg.Add(2)
	go func() {
		defer s.bg.Done()
		if err := s.runBinder(ctx); err != nil && ctx.Err() == nil {
			s.fail(fmt.Errorf("pod binder: %w", err))
		}
	}()
	go func() {
		defer s.bg.Done()
		defer log.Sync()
		if err := kubelet.Run(ctx, cfg); err != nil && ctx.Err() == nil {
			s.fail(fmt.Errorf("pod runner: %w (see %s)", err, s.path("logs", "kubelet.log")))
		}
	}()
	s.logf("pod runner started (node %s, pods on %s, logs in %s)", NodeName, s.opts.Subnet, cfg.LogDir)
	return nil
}
