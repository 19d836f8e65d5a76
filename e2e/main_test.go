//go:build e2e

// Package e2e drives Sluice on the local real stack: etcd, kube-apiserver,
// kube-controller-manager, backends as processes in their own network
// namespaces, the Sluice controller and the real Envoy. Every test asserts
// what a client sees through Envoy.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
)

// Namespace of the e2e objects.
const ns = "sluice-e2e"

// nackAnnotation set to "true" makes Sluice emit a config Envoy rejects.
const nackAnnotation = "sluice.dev/testing-nack"

var (
	st   *stack.Stack
	kube kubernetes.Interface
	kn   clientset.Interface
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := stack.NeedRoot(); err != nil {
		fmt.Println("e2e: FAIL:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root, err := stack.FindRoot()
	if err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	images, err := workload.Images(ctx, root)
	if err != nil {
		fmt.Println("e2e: building backend images:", err)
		return 1
	}
	// Two controller replicas and two Envoys: readiness, NACK isolation and
	// failover are tested on the same stack as the features.
	// bin/sluice-testing is bin/sluice with the NACK injection flag.
	opts := stack.Options{Images: images, Envoys: 2, Controllers: 2,
		SluiceBin:  filepath.Join(root, "bin", "sluice-testing"),
		SluiceArgs: []string{"--testing-nack-annotation=" + nackAnnotation},
		// Low enough for TestIdleFlood to reach with a few thousand sockets.
		BootstrapArgs: []string{fmt.Sprintf("--max-connections=%d", maxConnections)},
		XDSTLS:        true}
	s, err := stack.Start(ctx, opts)
	if err != nil {
		fmt.Println("e2e: the local stack did not start:", err)
		return 1
	}
	defer s.Stop()
	if !s.SluiceStarted {
		fmt.Println("e2e: Sluice did not start:", s.SluiceSkipReason)
		return 1
	}
	st, kube = s, s.Client
	if kn, err = clientset.NewForConfig(s.RESTConfig); err != nil {
		fmt.Println("e2e:", err)
		return 1
	}
	if err := workload.EnsureNamespace(ctx, kube, ns); err != nil {
		fmt.Println("e2e: namespace:", err)
		return 1
	}
	return m.Run()
}
