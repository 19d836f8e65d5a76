package controller

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	knfake "knative.dev/networking/pkg/client/clientset/versioned/fake"
	"knative.dev/pkg/apis"

	"sluice.dev/sluice/internal/rollout"
	"sluice.dev/sluice/translator"
)

const class = "sluice.ingress.networking.knative.dev"

type fakeSink struct {
	mu         sync.Mutex
	full       int
	last       *translator.Output
	outs       []*translator.Output // every full publish, in order
	endpoints  []map[string]*endpointv3.ClusterLoadAssignment
	allEDS     map[string]*endpointv3.ClusterLoadAssignment
	slow       bool
	acked      uint64
	heldBack   int // Behind calls answered with the slow Envoy
	rejections []rollout.Rejection
	signal     chan struct{}
	// nackRoute: an Envoy NACKs this route configuration the moment it is
	// published, before Publish returns.
	nackRoute string
	// asked is closed when the controller next reads the rejections.
	asked chan struct{}
}

func (f *fakeSink) Publish(out *translator.Output, eps map[string]*endpointv3.ClusterLoadAssignment) (uint64, error) {
	f.mu.Lock()
	f.full++
	f.last = out
	f.outs = append(f.outs, out)
	f.allEDS = eps
	gen := uint64(f.full)
	nack := f.nackRoute != "" && hasRoutes(out, f.nackRoute)
	asked := make(chan struct{})
	if nack {
		f.rejections = []rollout.Rejection{routesNACK(f.nackRoute)}
		f.asked = asked
	}
	f.mu.Unlock()
	if nack {
		select {
		case f.signal <- struct{}{}:
		default:
		}
		// The controller looks at the NACK before it records this publish.
		select {
		case <-asked:
		case <-time.After(10 * time.Second):
		}
	}
	return gen, nil
}

// Behind: an Envoy "slow" holds generation acked only.
func (f *fakeSink) Behind(gen uint64, _ *translator.Piece) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.slow && gen > f.acked {
		f.heldBack++
		return []string{"slow"}
	}
	return nil
}

func (f *fakeSink) Subscribe() (<-chan struct{}, func()) { return f.signal, func() {} }

func (f *fakeSink) Rejections() []rollout.Rejection {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.asked != nil {
		close(f.asked)
		f.asked = nil
	}
	return f.rejections
}

func (f *fakeSink) Served(typeURL, name string) string { return "v1" }

func (f *fakeSink) ack(gen uint64) {
	f.mu.Lock()
	f.acked = gen
	f.mu.Unlock()
	f.signal <- struct{}{}
}

func (f *fakeSink) PublishEndpoints(eps map[string]*endpointv3.ClusterLoadAssignment) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endpoints = append(f.endpoints, eps)
	return nil
}

func (f *fakeSink) state() (int, *translator.Output, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.full, f.last, len(f.endpoints)
}

func ingress(name, host, svc string, ann map[string]string) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Generation: 1, Annotations: ann,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, len(name), 0, time.UTC))},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts: []string{host}, Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
				Splits: []v1alpha1.IngressBackendSplit{{IngressBackend: v1alpha1.IngressBackend{
					ServiceNamespace: "ns", ServiceName: svc, ServicePort: intstr.FromInt(80)}, Percent: 100}},
			}}},
		}}},
	}
}

func service(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
}

func slice(svc, ip string) *discoveryv1.EndpointSlice {
	port, name, ready := int32(8080), "http", true
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-x", Namespace: "ns", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
}

type env struct {
	kube *kubefake.Clientset
	kn   *knfake.Clientset
	sink *fakeSink
	ctrl *Controller
}

func start(t *testing.T, kubeObjs []any, ings ...*v1alpha1.Ingress) *env {
	t.Helper()
	e := &env{kube: kubefake.NewClientset(), sink: &fakeSink{signal: make(chan struct{}, 1)}}
	for _, o := range kubeObjs {
		switch o := o.(type) {
		case *corev1.Service:
			_ = e.kube.Tracker().Add(o)
		case *discoveryv1.EndpointSlice:
			_ = e.kube.Tracker().Add(o)
		case *corev1.Secret:
			_ = e.kube.Tracker().Add(o)
		}
	}
	e.kn = knfake.NewSimpleClientset()
	for _, i := range ings {
		_ = e.kn.Tracker().Add(i)
	}
	e.ctrl = New(zap.NewNop(), e.kube, e.kn, e.sink, NewMetrics(nil), Options{
		IngressClass: class, SystemNamespace: "knative-serving", PublicService: "sluice-gateway",
		PrivateService: "sluice-internal", ClusterDomain: "cluster.local", Translator: translator.DefaultConfig(),
	})
	e.ctrl.SetLeader(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "first publish", e.ctrl.Ready)
	return e
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) get(t *testing.T, name string) *v1alpha1.Ingress {
	t.Helper()
	ing, err := e.kn.NetworkingV1alpha1().Ingresses("ns").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ing
}

func cond(ing *v1alpha1.Ingress, c apis.ConditionType) *apis.Condition {
	return ing.Status.GetCondition(c)
}

func ours() map[string]string { return map[string]string{networking.IngressClassAnnotationKey: class} }

func TestReadyStatusAndLoadBalancer(t *testing.T) {
	e := start(t, []any{service("a"), slice("a", "10.0.0.1")}, ingress("a", "a.example.com", "a", ours()))
	waitFor(t, "ready", func() bool { return e.get(t, "a").IsReady() })
	ing := e.get(t, "a")
	if got := ing.Status.PublicLoadBalancer.Ingress[0].DomainInternal; got != "sluice-gateway.knative-serving.svc.cluster.local" {
		t.Errorf("public LB = %q", got)
	}
	if got := ing.Status.PrivateLoadBalancer.Ingress[0].DomainInternal; got != "sluice-internal.knative-serving.svc.cluster.local" {
		t.Errorf("private LB = %q", got)
	}
	_, out, _ := e.sink.state()
	if len(out.Clusters) != 1 || out.Clusters[0].Name != "ns/a:80" {
		t.Errorf("clusters = %v", out.Clusters)
	}
	e.sink.mu.Lock()
	cla := e.sink.allEDS["ns/a:80"]
	e.sink.mu.Unlock()
	if cla == nil || len(cla.Endpoints) != 1 || cla.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address != "10.0.0.1" {
		t.Errorf("endpoints = %v", cla)
	}
}

// Objects of another class, or none, must never be written.
func TestOtherClassesUntouched(t *testing.T) {
	other := ingress("b", "b.example.com", "a", map[string]string{networking.IngressClassAnnotationKey: "kourier.ingress.networking.knative.dev"})
	none := ingress("c", "c.example.com", "a", nil)
	e := start(t, []any{service("a")}, other, none, ingress("a", "a.example.com", "a", ours()))
	waitFor(t, "ours ready", func() bool { return e.get(t, "a").IsReady() })
	// A barrier: z, created after the others were handled, turns Ready
	// only once the controller has worked through what came before it.
	if _, err := e.kn.NetworkingV1alpha1().Ingresses("ns").Create(context.Background(), ingress("z", "z.example.com", "a", ours()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "z ready", func() bool { return e.get(t, "z").IsReady() })
	for _, a := range e.kn.Actions() {
		switch a.GetVerb() {
		case "list", "watch", "get":
			continue
		case "create":
			continue // the test's own
		}
		u, ok := a.(k8stesting.UpdateAction)
		if !ok || a.GetSubresource() != "status" {
			t.Errorf("unexpected write %s %s", a.GetVerb(), a.GetResource())
			continue
		}
		if name := u.GetObject().(*v1alpha1.Ingress).Name; name != "a" && name != "z" {
			t.Errorf("status written on ingress %s of another class", name)
		}
	}
	for _, n := range []string{"b", "c"} {
		if got := e.get(t, n); len(got.Status.Conditions) != 0 || got.Finalizers != nil || got.ResourceVersion != "" {
			t.Errorf("ingress %s of another class was touched: %+v", n, got.ObjectMeta)
		}
	}
	_, out, _ := e.sink.state()
	for _, sc := range out.Scopes {
		if !strings.HasSuffix(sc.Name, "/a.example.com") && !strings.HasSuffix(sc.Name, "/z.example.com") {
			t.Errorf("served a host of another class: %s", sc.Name)
		}
	}
}

// A missing Service marks only that ingress; creating it later fixes it.
func TestDependencyTracking(t *testing.T) {
	e := start(t, []any{service("a")}, ingress("a", "a.example.com", "a", ours()), ingress("m", "m.example.com", "missing", ours()))
	waitFor(t, "a ready", func() bool { return e.get(t, "a").IsReady() })
	waitFor(t, "m rejected", func() bool {
		c := cond(e.get(t, "m"), v1alpha1.IngressConditionNetworkConfigured)
		return c != nil && c.IsFalse() && c.Reason == translator.ReasonServiceNotFound
	})
	if _, err := e.kube.CoreV1().Services("ns").Create(context.Background(), service("missing"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "m ready after its Service appeared", func() bool { return e.get(t, "m").IsReady() })
}

// A host claimed twice: the older ingress keeps it.
func TestHostConflict(t *testing.T) {
	older := ingress("a", "same.example.com", "a", ours())
	newer := ingress("bb", "same.example.com", "a", ours())
	e := start(t, []any{service("a")}, older, newer)
	waitFor(t, "older ready", func() bool { return e.get(t, "a").IsReady() })
	waitFor(t, "newer rejected", func() bool {
		c := cond(e.get(t, "bb"), v1alpha1.IngressConditionNetworkConfigured)
		return c != nil && c.Reason == translator.ReasonHostConflict
	})
	// Deleting the older hands the host over.
	if err := e.kn.NetworkingV1alpha1().Ingresses("ns").Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "newer ready", func() bool { return e.get(t, "bb").IsReady() })
}

// Endpoint changes go out as EDS only, without a full publish.
func TestEndpointOnlyUpdate(t *testing.T) {
	e := start(t, []any{service("a"), slice("a", "10.0.0.1")}, ingress("a", "a.example.com", "a", ours()))
	waitFor(t, "ready", func() bool { return e.get(t, "a").IsReady() })
	full, _, _ := e.sink.state()
	s := slice("a", "10.0.0.2")
	if _, err := e.kube.DiscoveryV1().EndpointSlices("ns").Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "EDS update", func() bool { _, _, n := e.sink.state(); return n > 0 })
	e.sink.mu.Lock()
	got := e.sink.endpoints[len(e.sink.endpoints)-1]["ns/a:80"]
	e.sink.mu.Unlock()
	if got.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address != "10.0.0.2" {
		t.Errorf("EDS = %v", got)
	}
	// A barrier: ingress m, created now, is in the first full publish
	// after the endpoint change unless that change caused one itself.
	if _, err := e.kn.NetworkingV1alpha1().Ingresses("ns").Create(context.Background(), ingress("m", "m.example.com", "a", ours()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mRoutes := translator.IngressRoutes("ns", "m")
	waitFor(t, "m published", func() bool { return e.served(mRoutes) })
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	for i, out := range e.sink.outs[full:] {
		if !hasRoutes(out, mRoutes) {
			t.Errorf("the endpoint change caused a full publish (number %d)", full+i+1)
		}
	}
}

// Spec updates bump the generation; status follows it.
func TestGenerationFollowed(t *testing.T) {
	e := start(t, []any{service("a"), service("b")}, ingress("a", "a.example.com", "a", ours()))
	waitFor(t, "ready", func() bool { return e.get(t, "a").IsReady() })
	// The fake clientset's UpdateStatus writes the whole object, so a
	// status write in flight can undo the spec change: apply it until it
	// sticks (the real API server keeps status and spec apart).
	update := func() {
		ing := e.get(t, "a")
		if ing.Generation == 2 {
			return
		}
		ing.Spec.Rules[0].HTTP.Paths[0].Splits[0].ServiceName = "b"
		ing.Generation = 2
		_, _ = e.kn.NetworkingV1alpha1().Ingresses("ns").Update(context.Background(), ing, metav1.UpdateOptions{})
	}
	update()
	waitFor(t, "generation 2 ready", func() bool {
		update()
		i := e.get(t, "a")
		return i.IsReady() && i.Status.ObservedGeneration == 2
	})
	_, out, _ := e.sink.state()
	if len(out.Clusters) != 1 || out.Clusters[0].Name != "ns/b:80" {
		t.Errorf("clusters after update = %v", out.Clusters)
	}
}

// Ready waits for the Envoys: an ingress is not Ready while one connected
// Envoy has not acknowledged the state that holds it. Its status is not
// written meanwhile, until it has waited NamePendingAfter: then it names
// the Envoys behind.
func TestReadyWaitsForEnvoys(t *testing.T) {
	e := &env{kube: kubefake.NewClientset(), sink: &fakeSink{signal: make(chan struct{}, 1), slow: true}}
	e.kube = kubefake.NewClientset(service("a"))
	e.kn = knfake.NewSimpleClientset(ingress("a", "a.example.com", "a", ours()))
	e.ctrl = New(zap.NewNop(), e.kube, e.kn, e.sink, NewMetrics(nil), Options{
		IngressClass: class, SystemNamespace: "knative-serving", PublicService: "p", PrivateService: "q",
		ClusterDomain: "cluster.local", Translator: translator.DefaultConfig(), NamePendingAfter: time.Second,
	})
	e.ctrl.SetLeader(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = e.ctrl.Run(ctx) }()
	waitFor(t, "first publish", e.ctrl.Ready)
	waitFor(t, "a checked against the slow Envoy", func() bool {
		e.sink.mu.Lock()
		defer e.sink.mu.Unlock()
		return e.sink.heldBack > 0
	})
	if a := e.get(t, "a"); a.IsReady() || a.Status.ObservedGeneration != 0 {
		t.Fatalf("status written before the Envoy acknowledged or NamePendingAfter passed: %+v", a.Status)
	}
	// With no Envoy event at all (a stopped Envoy sends none), the status
	// names the Envoy once the ingress has waited NamePendingAfter.
	waitFor(t, "a's status naming the slow Envoy", func() bool {
		a := e.get(t, "a")
		c := cond(a, v1alpha1.IngressConditionLoadBalancerReady)
		ready := cond(a, v1alpha1.IngressConditionReady)
		return a.Status.ObservedGeneration == 1 && c != nil && c.Reason == "EnvoysBehind" && c.Message == "not served yet by 1 Envoy: slow" &&
			ready != nil && ready.IsUnknown() && ready.Reason == "EnvoysBehind"
	})
	full, _, _ := e.sink.state()
	e.sink.ack(uint64(full))
	waitFor(t, "ready after the ACK", func() bool { return e.get(t, "a").IsReady() })

	// An Envoy joins that does not hold a yet: a stays Ready (it is not a
	// change of a), past NamePendingAfter too.
	e.sink.mu.Lock()
	e.sink.acked = 0
	e.sink.mu.Unlock()
	e.ctrl.statusQueue.Add("ns/a")
	time.Sleep(1500 * time.Millisecond)
	if a := e.get(t, "a"); !a.IsReady() {
		t.Fatalf("a Ready ingress lost Ready when an Envoy joined: %+v", a.Status)
	}
}

// startHeld starts with ingress a Ready, then makes the Envoy hold what
// it has now and no more, so b's translation stays unconfirmed.
func startHeld(t *testing.T) *env {
	e := start(t, []any{service("a")}, ingress("a", "a.example.com", "a", ours()))
	waitFor(t, "a ready", func() bool { return e.get(t, "a").IsReady() })
	full, _, _ := e.sink.state()
	e.sink.mu.Lock()
	e.sink.slow, e.sink.acked = true, uint64(full)
	e.sink.mu.Unlock()
	return e
}

func hasRoutes(out *translator.Output, name string) bool {
	return slices.ContainsFunc(out.Routes, func(r *routev3.RouteConfiguration) bool { return r.Name == name })
}

// served says whether the last publish holds route configuration name.
func (e *env) served(name string) bool {
	_, out, _ := e.sink.state()
	return hasRoutes(out, name)
}

// routesNACK is an Envoy's rejection of route configuration name, which
// names its ingress.
func routesNACK(name string) rollout.Rejection {
	return rollout.Rejection{Node: "envoy-0", TypeURL: resource.RouteType, Name: name, Version: "v1", Error: "duplicate domain"}
}

// rejectedByEnvoy says whether ingress name's status carries routesNACK's
// error.
func (e *env) rejectedByEnvoy(t *testing.T, name string) func() bool {
	return func() bool {
		c := cond(e.get(t, name), v1alpha1.IngressConditionNetworkConfigured)
		return c != nil && c.Reason == rollout.ReasonEnvoyRejected && strings.Contains(c.Message, "duplicate domain")
	}
}

func (e *env) createB(t *testing.T) {
	t.Helper()
	if _, err := e.kn.NetworkingV1alpha1().Ingresses("ns").Create(context.Background(), ingress("b", "b.example.com", "a", ours()), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// An Envoy's NACK takes out only the ingress behind it, with Envoy's
// error as the reason; the others keep being served.
func TestNACKIsolated(t *testing.T) {
	e := startHeld(t)
	e.createB(t)
	bRoutes := translator.IngressRoutes("ns", "b")
	waitFor(t, "b published", func() bool { return e.served(bRoutes) })
	e.sink.mu.Lock()
	e.sink.rejections = []rollout.Rejection{routesNACK(bRoutes)}
	e.sink.mu.Unlock()
	e.sink.signal <- struct{}{}
	waitFor(t, "b rejected with Envoy's error", e.rejectedByEnvoy(t, "b"))
	// The status may be written from the NACK before the republish
	// without b (they run on separate loops), so wait for the latter.
	waitFor(t, "b out of the served state", func() bool { return !e.served(bRoutes) })
	if !e.served(translator.IngressRoutes("ns", "a")) {
		t.Error("a not served after b's NACK")
	}
	if !e.get(t, "a").IsReady() {
		t.Error("a lost Ready over b's NACK")
	}
}

// A NACK may come before the controller has recorded the publish it
// answers; no other Envoy event follows. The ingress must still be taken
// out and marked rejected.
func TestNACKBeforePublishRecorded(t *testing.T) {
	e := startHeld(t)
	bRoutes := translator.IngressRoutes("ns", "b")
	e.sink.mu.Lock()
	e.sink.nackRoute = bRoutes
	e.sink.mu.Unlock()
	e.createB(t)
	waitFor(t, "b rejected with Envoy's error", e.rejectedByEnvoy(t, "b"))
	waitFor(t, "b out of the served state", func() bool { return !e.served(bRoutes) })
}
