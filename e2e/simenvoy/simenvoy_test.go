package simenvoy

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"

	"sluice.dev/sluice/internal/xdssink"
	"sluice.dev/sluice/translator"
	"sluice.dev/sluice/xds"
)

// anyService: every Service exists, with port 80 named http.
type anyService struct{}

func (anyService) Service(ns, name string) (*corev1.Service, bool) {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, true
}
func (anyService) Secret(string, string) (*corev1.Secret, bool) { return nil, false }

// ingress is Serving-shaped: a ClusterLocal rule with three hosts and an
// ExternalIP one, splitting 90/10 over two revisions.
func ingress(i int) *v1alpha1.Ingress {
	ns, name := fmt.Sprintf("ns-%d", i%3), fmt.Sprintf("svc-%d", i)
	var splits []v1alpha1.IngressBackendSplit
	for j, p := range []int{90, 10} {
		splits = append(splits, v1alpha1.IngressBackendSplit{Percent: p, IngressBackend: v1alpha1.IngressBackend{
			ServiceNamespace: ns, ServiceName: fmt.Sprintf("%s-%05d", name, j+1), ServicePort: intstr.FromInt(80)}})
	}
	paths := []v1alpha1.HTTPIngressPath{{Splits: splits}}
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			{Hosts: []string{name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"},
				Visibility: v1alpha1.IngressVisibilityClusterLocal, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}},
			{Hosts: []string{name + "." + ns + ".example.com"},
				Visibility: v1alpha1.IngressVisibilityExternalIP, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}},
		}},
	}
}

// served is a real xDS server fed by the translator, as the controller
// feeds it.
type served struct {
	srv  *xds.Server
	sink *xdssink.Sink
	tab  *translator.Table
	cfg  translator.Config
	addr string
}

func serve(t testing.TB, n int) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &served{srv: xds.New(nil, xds.Options{}), cfg: translator.DefaultConfig()}
	s.sink = xdssink.New(s.srv, nil)
	s.tab = translator.NewTable(s.cfg, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	go func() { _ = s.srv.Serve(ctx, lis) }()
	for i := range n {
		s.tab.Set(translator.Translate(ingress(i), anyService{}, &s.cfg))
	}
	s.publish(t)
	return s
}

func (s *served) publish(t testing.TB) {
	t.Helper()
	out := s.tab.Build()
	eps := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, name := range out.Edits.Clusters {
		if b, ok := out.Backends[name]; ok && !b.External {
			eps[name] = translator.LoadAssignment(name, b, nil)
		}
	}
	if out.Edits.All {
		for name, b := range out.Backends {
			if !b.External {
				eps[name] = translator.LoadAssignment(name, b, nil)
			}
		}
	}
	if _, err := s.sink.Publish(out, eps); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t testing.TB, what string, f func() bool) {
	t.Helper()
	waitWithin(t, 20*time.Second, what, f)
}

func waitWithin(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Simulated Envoys, delta and SotW, get the whole configuration as Envoy
// would (scopes, then the route configurations they name; clusters, then
// their endpoints), ACK it so the server counts them in sync, and get a
// new ingress; one frozen delta client does not get it until thawed, and
// does not hold the others back (the server's ACK timeout is 10 s).
func TestFleetFollowsTheServer(t *testing.T) {
	s := serve(t, 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := Start(ctx, Options{Addr: s.addr, SotWEvery: 2}, 4)
	waitFor(t, "4 clients ready", func() bool { return f.Stats().Ready == 4 })
	waitFor(t, "the server counting 4 Envoys in sync", func() bool {
		synced, _ := s.srv.Synced(s.srv.Generation())
		return len(synced) == 4
	})
	for _, c := range f.clients {
		c.mu.Lock()
		held := map[string]int{}
		for typ, names := range c.held {
			held[typ] = len(names)
		}
		c.mu.Unlock()
		// 5 ingresses: a route configuration each (and the redirect's),
		// two clusters each with their endpoints.
		if held[resource.RouteType] < 5 || held[resource.ClusterType] != 10 || held[resource.EndpointType] != 10 || held[resource.ScopedRouteType] == 0 {
			t.Errorf("client %d (delta %v) holds %v", c.i, c.delta, held)
		}
	}
	if st := f.Stats(); st.NACKs != 0 {
		t.Errorf("%d NACKs", st.NACKs)
	}

	f.Freeze(0)
	rc := translator.IngressRoutes("ns-2", "svc-5")
	f.Expect(resource.RouteType, rc)
	s.tab.Set(translator.Translate(ingress(5), anyService{}, &s.cfg))
	s.publish(t)
	waitFor(t, "the new route configuration at the 3 others", func() bool { n, _ := f.Held(resource.RouteType, rc, 0); return n == 3 })
	n, slowest := f.Held(resource.RouteType, rc)
	if n != 3 {
		t.Errorf("%d clients hold it, with one frozen", n)
	}
	t.Logf("with one client frozen, the others held the new ingress in %v", slowest)
	if slowest > 2*time.Second {
		t.Errorf("the frozen client held the others back: %v", slowest)
	}
	f.Thaw(0)
	waitFor(t, "the thawed client", func() bool { n, _ := f.Held(resource.RouteType, rc); return n == 4 })

	// A join is ready on its own.
	i := f.Join()
	waitFor(t, "the joined client ready", func() bool { return f.Stats().Ready == 5 })
	if f.client(i).readyAt.IsZero() {
		t.Error("joined client not ready")
	}
}

// A huge ingress created and deleted among small ones, as the e2e fuzzer
// does: every client ends holding the small ones and none of the huge
// one's route configuration, well before the ACK timeout. Its 60,000
// scopes overflow the caches' logs, which a watch open at the time must
// not lose.
func TestChurnWithAHugeIngress(t *testing.T) {
	s := serve(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := Start(ctx, Options{Addr: s.addr}, 3)
	waitFor(t, "3 clients ready", func() bool { return f.Stats().Ready == 3 })

	huge := ingress(100)
	for k := range 20000 {
		huge.Spec.Rules[1].Hosts = append(huge.Spec.Rules[1].Hosts, fmt.Sprintf("h%d.example.com", k))
	}
	hugeRC := translator.IngressRoutes(huge.Namespace, huge.Name)
	var start time.Time
	for i := 3; i < 8; i++ {
		if i == 4 {
			s.tab.Set(translator.Translate(huge, anyService{}, &s.cfg))
			s.publish(t)
		}
		if i == 6 {
			start = time.Now()
			s.tab.Delete(huge.Namespace + "/" + huge.Name)
			s.publish(t)
		}
		rc := translator.IngressRoutes(ingress(i).Namespace, ingress(i).Name)
		f.Expect(resource.RouteType, rc)
		s.tab.Set(translator.Translate(ingress(i), anyService{}, &s.cfg))
		s.publish(t)
		waitFor(t, rc+" at every client", func() bool { n, _ := f.Held(resource.RouteType, rc); return n == 3 })
	}
	waitFor(t, "the huge ingress gone from every client", func() bool {
		for _, c := range f.clients {
			c.mu.Lock()
			_, has := c.held[resource.RouteType][f.names.id(hugeRC)]
			c.mu.Unlock()
			if has {
				return false
			}
		}
		return true
	})
	// The huge removal truncates the caches' logs; nothing may wait for
	// the ACK timeout (10 s) to get past it.
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("from the huge ingress's deletion to every client past it: %v", d)
	}
}
