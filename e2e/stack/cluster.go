package stack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// IngressCRDPath finds config/ingress.yaml of the knative.dev/networking
// version the sluice module pins.
func IngressCRDPath(root string) (string, error) {
	dir, err := ModuleDir(root, "knative.dev/networking")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "config", "ingress.yaml"), nil
}

// bootstrapCluster installs what Knative Serving would have: the KIngress
// CRD, the namespaces, config-network and the gateway Services.
func (s *Stack) bootstrapCluster(ctx context.Context) error {
	if err := s.installCRD(ctx); err != nil {
		return err
	}
	cs := s.Client
	for _, ns := range []string{SystemNS, TestNS} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config-network", Namespace: SystemNS},
		Data:       map[string]string{"ingress-class": IngressClass},
	}
	if _, err := cs.CoreV1().ConfigMaps(SystemNS).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating config-network: %w", err)
	}
	p := s.opts.Ports
	port := func(name string, port, nodePort int) corev1.ServicePort {
		return corev1.ServicePort{Name: name, Port: int32(port), TargetPort: intstr.FromInt32(int32(port)), NodePort: int32(nodePort)}
	}
	// No selector: Envoy runs on the host, not in pods.
	labels := map[string]string{"app.kubernetes.io/name": "sluice", "app.kubernetes.io/component": "gateway"}
	services := []*corev1.Service{{
		ObjectMeta: metav1.ObjectMeta{Name: ExternalGWName, Namespace: SystemNS, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeNodePort,
			Ports: []corev1.ServicePort{port("http", 80, p.ExternalHTTP), port("https", 443, p.ExternalHTTPS)},
		},
	}, {
		ObjectMeta: metav1.ObjectMeta{Name: InternalGWName, Namespace: SystemNS, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type:  corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{port("http", 80, 0), port("https", 443, 0)},
		},
	}}
	if s.opts.Chart {
		services = nil // the chart's
	}
	for _, svc := range services {
		if _, err := cs.CoreV1().Services(SystemNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating Service %s: %w", svc.Name, err)
		}
	}
	// Pods are refused by the ServiceAccount admission until these exist.
	for _, ns := range []string{SystemNS, TestNS, "default"} {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("ServiceAccount %s/default did not appear (is the serviceaccount controller running? see %s): %w",
				ns, s.path("logs", "kube-controller-manager.log"), err)
		}
	}
	s.logf("cluster ready: KIngress CRD, namespaces %s and %s, config-network, Services %s and %s", SystemNS, TestNS, ExternalGWName, InternalGWName)
	return nil
}

func (s *Stack) installCRD(ctx context.Context) error {
	path, err := IngressCRDPath(s.opts.Root)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &obj.Object); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	dyn, err := dynamic.NewForConfig(s.RESTConfig)
	if err != nil {
		return err
	}
	crds := dyn.Resource(crdGVR)
	if _, err := crds.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the KIngress CRD from %s: %w", path, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got, err := crds.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("KIngress CRD not established: %w", err)
	}
	// Discovery of the new type lags a little behind Established.
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(schema.GroupVersionResource{Group: "networking.internal.knative.dev", Version: "v1alpha1", Resource: "ingresses"}).
			Namespace("default").List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
}

// startClusterNet gives the pods what kube-proxy and CoreDNS give them in a
// cluster: names (the DNS answers on the bridge IP), cluster IPs, and the
// API server at its "kubernetes" Service, whose endpoint is the bridge IP
// (the API server itself listens on loopback only). The gateway Services
// get endpoints at the bridge, where Envoy listens for the pods.
func (s *Stack) startClusterNet(ctx context.Context) error {
	cn, err := startClusterNet(ctx, s.Client, hostPort(s.BridgeIP, 53))
	if err != nil {
		return err
	}
	p := s.opts.Ports
	lis, err := net.Listen("tcp", hostPort(s.BridgeIP, p.APIServer))
	if err != nil {
		return fmt.Errorf("the API server's address for pods: %w", err)
	}
	go forward(lis, hostPort("127.0.0.1", p.APIServer))
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		<-cn.done
		lis.Close()
	}()
	gw := map[string][2]int{
		ExternalGWName: {p.ExternalHTTP, p.ExternalHTTPS},
		InternalGWName: {p.InternalHTTP, p.InternalHTTPS},
	}
	if s.opts.Chart {
		gw = nil // the chart's Services select its Envoy pods
	}
	for name, ports := range gw {
		if err := s.gatewayEndpoints(ctx, name, ports[0], ports[1]); err != nil {
			return err
		}
	}
	s.logf("cluster DNS on %s:53, Service cluster IPs %s proxied, API server for pods at %s",
		s.BridgeIP, s.opts.ServiceCIDR, hostPort(s.BridgeIP, p.APIServer))
	return nil
}

// gatewayEndpoints points a gateway Service (it has no selector: Envoy runs
// on the host) at the bridge IP.
func (s *Stack) gatewayEndpoints(ctx context.Context, name string, httpPort, httpsPort int) error {
	port := func(n string, p int) discoveryv1.EndpointPort {
		return discoveryv1.EndpointPort{Name: &n, Port: new(int32(p)), Protocol: new(corev1.ProtocolTCP)}
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SystemNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "sluice-e2e-stack"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{s.BridgeIP}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)}}},
		Ports:       []discoveryv1.EndpointPort{port("http", httpPort), port("https", httpsPort)},
	}
	if _, err := s.Client.DiscoveryV1().EndpointSlices(SystemNS).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("endpoints of %s: %w", name, err)
	}
	return nil
}
