//go:build e2e

package knative

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"sluice.dev/sluice/e2e/stack"
	"sluice.dev/sluice/e2e/workload"
)

// ns holds the tests' Knative Services.
const ns = "knative-e2e"

var (
	st *stack.Stack
	kc *Cluster
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run starts the stack with real Knative Serving, two Sluice replicas and
// two Envoys, and tag header routing on (config-features).
func run(m *testing.M) int {
	if err := stack.NeedRoot(); err != nil {
		fmt.Println("knative e2e: FAIL:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root, err := stack.FindRoot()
	if err != nil {
		fmt.Println("knative e2e:", err)
		return 1
	}
	images, err := workload.Images(ctx, root)
	if err != nil {
		fmt.Println("knative e2e: building images:", err)
		return 1
	}
	s, err := stack.Start(ctx, stack.Options{Images: images, Envoys: 2, Controllers: 2, Serving: true, UnreadyProbePeriod: time.Second})
	if err != nil {
		fmt.Println("knative e2e: the local stack with Knative Serving did not start:", err)
		return 1
	}
	defer s.Stop()
	st = s
	if kc, err = New(s); err != nil {
		fmt.Println("knative e2e:", err)
		return 1
	}
	if _, err := s.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		fmt.Println("knative e2e: namespace:", err)
		return 1
	}
	if _, err := s.Client.CoreV1().ConfigMaps(stack.SystemNS).Patch(ctx, "config-features", types.MergePatchType,
		[]byte(`{"data":{"tag-header-based-routing":"enabled"}}`), metav1.PatchOptions{}); err != nil {
		fmt.Println("knative e2e: config-features:", err)
		return 1
	}
	return m.Run()
}
