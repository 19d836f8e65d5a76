package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// clusterNet is what kube-proxy, CoreDNS and a load balancer controller give
// a cluster, for the pods on the bridge and this host: cluster DNS (dns.go),
// Service cluster IPs that reach the Service's ready endpoints, and a
// LoadBalancer Service's cluster IP as its external IP (this file). The whole Service range is a
// local route on the bridge, so the host owns every cluster IP; a
// userspace proxy listens on each Service port of each cluster IP and
// relays each connection to a ready endpoint, round robin.
type clusterNet struct {
	client   kubernetes.Interface
	services listersv1.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	factory  informers.SharedInformerFactory
	dns      *clusterDNS

	mu        sync.Mutex
	listeners map[string]*svcListener // "ip:port" -> listener
	next      atomic.Uint64           // round robin
	queue     chan struct{}
	done      chan struct{}
}

// svcListener serves one Service port on its cluster IP.
type svcListener struct {
	lis       net.Listener
	namespace string
	service   string
	port      corev1.ServicePort
}

// startClusterNet routes the service CIDR to the host, starts the DNS on
// dnsAddr and the proxy, and keeps them in step with the API until ctx ends.
func startClusterNet(ctx context.Context, client kubernetes.Interface, dnsAddr string) (*clusterNet, error) {
	f := informers.NewSharedInformerFactory(client, 10*time.Minute)
	cn := &clusterNet{
		client:    client,
		services:  f.Core().V1().Services().Lister(),
		slices:    f.Discovery().V1().EndpointSlices().Lister(),
		factory:   f,
		listeners: map[string]*svcListener{},
		queue:     make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { cn.kick() },
		UpdateFunc: func(any, any) { cn.kick() },
		DeleteFunc: func(any) { cn.kick() },
	}
	if _, err := f.Core().V1().Services().Informer().AddEventHandler(kick); err != nil {
		return nil, err
	}
	_ = f.Discovery().V1().EndpointSlices().Informer() // DNS and the proxy read them on demand
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("cluster network: %v did not sync", typ)
		}
	}
	d, err := startClusterDNS(cn, dnsAddr)
	if err != nil {
		return nil, err
	}
	cn.dns = d
	go cn.run(ctx)
	return cn, nil
}

func (cn *clusterNet) kick() {
	select {
	case cn.queue <- struct{}{}:
	default:
	}
}

func (cn *clusterNet) run(ctx context.Context) {
	defer close(cn.done)
	cn.sync()
	for {
		select {
		case <-ctx.Done():
			cn.dns.stop()
			cn.mu.Lock()
			for k, l := range cn.listeners {
				l.lis.Close()
				delete(cn.listeners, k)
			}
			cn.mu.Unlock()
			return
		case <-cn.queue:
			cn.sync()
		}
	}
}

// sync opens a listener for every TCP port of every cluster IP and closes
// those of Services that are gone or changed.
func (cn *clusterNet) sync() {
	svcs, err := cn.services.List(labels.Everything())
	if err != nil {
		return
	}
	want := map[string]*svcListener{}
	for _, svc := range svcs {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone {
			continue
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer && len(svc.Status.LoadBalancer.Ingress) == 0 {
			go cn.loadBalancer(svc.DeepCopy())
		}
		for _, p := range svc.Spec.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			want[net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))] = &svcListener{namespace: svc.Namespace, service: svc.Name, port: p}
		}
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	for addr, l := range cn.listeners {
		if w, ok := want[addr]; !ok || w.namespace != l.namespace || w.service != l.service || w.port.Name != l.port.Name {
			l.lis.Close()
			delete(cn.listeners, addr)
		} else {
			l.port = w.port // a new targetPort takes effect at once
		}
	}
	for addr, w := range want {
		if _, ok := cn.listeners[addr]; ok {
			continue
		}
		lis, err := reusePort.Listen(context.Background(), "tcp", addr)
		if err != nil {
			continue // retried on the next change
		}
		w.lis = lis
		cn.listeners[addr] = w
		go cn.accept(w)
	}
}

// loadBalancer gives a LoadBalancer Service its cluster IP as external IP,
// as a cloud's load balancer controller would give an address: this host
// already proxies it, and clients (and helm install --wait) look for it.
func (cn *clusterNet) loadBalancer(svc *corev1.Service) {
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: svc.Spec.ClusterIP, IPMode: new(corev1.LoadBalancerIPModeVIP)}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = cn.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}) // a conflict comes back as a change
}

// reusePort lets Envoy's listeners, which bind 0.0.0.0 with SO_REUSEPORT,
// share a port with a cluster IP's listener (the more specific address
// gets that address's connections).
var reusePort = net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return cmp.Or(err, serr)
}}

func (cn *clusterNet) accept(l *svcListener) {
	for {
		c, err := l.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go cn.relay(c, l)
	}
}

// relay connects c to a ready endpoint of the Service; with none, the
// connection is closed (kube-proxy rejects it).
func (cn *clusterNet) relay(c net.Conn, l *svcListener) {
	defer c.Close()
	cn.mu.Lock()
	port := l.port
	cn.mu.Unlock()
	targets := cn.targets(l.namespace, l.service, port)
	if len(targets) == 0 {
		return
	}
	start := int(cn.next.Add(1))
	var up net.Conn
	for i := range targets {
		var err error
		if up, err = net.DialTimeout("tcp", targets[(start+i)%len(targets)], 3*time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	splice(c, up)
}

// splice copies both ways until both sides are done, passing half-closes on.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(a, b)
	go pipe(b, a)
	<-done
	<-done
}

// forward relays every connection to lis to target until lis is closed.
func forward(lis net.Listener, target string) {
	for {
		c, err := lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer c.Close()
			up, err := net.DialTimeout("tcp", target, 3*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			splice(c, up)
		}()
	}
}

// targets lists ip:port of the ready endpoints serving port of a Service.
func (cn *clusterNet) targets(ns, svc string, port corev1.ServicePort) []string {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc})
	slices, err := cn.slices.EndpointSlices(ns).List(sel)
	if err != nil {
		return nil
	}
	var out []string
	for _, sl := range slices {
		if sl.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var target int32
		for _, p := range sl.Ports {
			if p.Port != nil && (p.Name == nil && port.Name == "" || p.Name != nil && *p.Name == port.Name) {
				target = *p.Port
			}
		}
		if target == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(target))))
			}
		}
	}
	return out
}
