// Package kubelet runs the Pods bound to one Node as plain processes, each in
// its own network namespace attached to a bridge, for the local e2e stack
// (no container runtime needed). It writes Pod status like a kubelet: IPs,
// phase, conditions, container states, readiness from the pod's probes.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// DefaultNetnsPrefix names the namespaces (and /etc/netns entries) of pods.
const DefaultNetnsPrefix = "sluice-"

// Config configures Run.
type Config struct {
	// Client talks to the API server; if nil, one is built from RestConfig.
	Client     kubernetes.Interface
	RestConfig *rest.Config

	// NodeName selects the pods to run (spec.nodeName).
	NodeName string
	// Bridge is an existing, up Linux bridge; pod veths are attached to it.
	Bridge string
	// PodCIDR is the IPv4 subnet of the bridge, e.g. "10.244.0.0/24".
	PodCIDR string
	// Gateway is the bridge's address in PodCIDR, the pods' default route.
	Gateway string
	// HostIP is reported as status.hostIP; defaults to Gateway.
	HostIP string

	// Images maps an image reference (as written, without tag or digest, or
	// just its last path element) to an executable.
	Images map[string]string
	// ResolveImage is asked about images Images does not know. Returning
	// "" with no error falls through to absolute executable paths.
	ResolveImage func(image string) (string, error)

	// ExtraHosts are hostname -> IP entries added to every pod's /etc/hosts.
	ExtraHosts map[string]string
	// Nameserver goes into every pod's resolv.conf; by default the pod's
	// own loopback, where nothing answers.
	Nameserver string

	// LogDir receives one log file per container: <ns>_<pod>_<container>.log.
	LogDir string
	// VolumeDir holds the pods' volumes, one directory per pod UID;
	// default LogDir/volumes.
	VolumeDir string
	// NetnsPrefix prefixes namespace names; default DefaultNetnsPrefix. Two
	// kubelets on one machine need different prefixes: each removes
	// namespaces with its prefix on start.
	NetnsPrefix string
	// UnreadyProbePeriod, if set, repeats readiness and startup probes that
	// have not succeeded (yet, or any more) at most this far apart instead of
	// waiting a full periodSeconds as the kubelet does. It speeds up e2e
	// runs whose pods use the default 10s period.
	UnreadyProbePeriod time.Duration
	// API, if Address is set, serves container logs to the API server
	// (kubectl logs) over TLS.
	API APIConfig
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
}

// APIConfig is where the kubelet API listens, its certificate, and the CA
// its clients' certificates must come from.
type APIConfig struct {
	Address, CertFile, KeyFile, ClientCAFile string
}

type kubelet struct {
	cfg     Config
	client  kubernetes.Interface
	lister  listersv1.PodLister
	svcs    listersv1.ServiceLister // nil until Run
	mounts  mountpoints
	cgroups *cgroups // nil without a writable cgroup hierarchy
	log     *zap.Logger
	ipam    *ipam
	subnet  *net.IPNet
	gateway net.IP
	hostIP  string

	mu      sync.Mutex
	workers map[string][]*podWorker // by pod key; more than one while a same-named pod replaces another
	ctx     context.Context
	queue   workqueue.TypedRateLimitingInterface[string]
}

func newKubelet(cfg Config) (*kubelet, error) {
	if cfg.NodeName == "" || cfg.Bridge == "" || cfg.LogDir == "" {
		return nil, errors.New("kubelet: NodeName, Bridge and LogDir are required")
	}
	if cfg.NetnsPrefix == "" {
		cfg.NetnsPrefix = DefaultNetnsPrefix
	}
	if cfg.VolumeDir == "" {
		cfg.VolumeDir = filepath.Join(cfg.LogDir, "volumes")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	_, subnet, err := net.ParseCIDR(cfg.PodCIDR)
	if err != nil {
		return nil, fmt.Errorf("kubelet: PodCIDR: %w", err)
	}
	gw := net.ParseIP(cfg.Gateway)
	if gw == nil {
		return nil, fmt.Errorf("kubelet: invalid Gateway %q", cfg.Gateway)
	}
	a, err := newIPAM(subnet, gw)
	if err != nil {
		return nil, fmt.Errorf("kubelet: %w", err)
	}
	hostIP := cfg.HostIP
	if hostIP == "" {
		hostIP = gw.String()
	}
	client := cfg.Client
	if client == nil {
		if cfg.RestConfig == nil {
			return nil, errors.New("kubelet: Client or RestConfig is required")
		}
		if client, err = kubernetes.NewForConfig(cfg.RestConfig); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	return &kubelet{
		cfg: cfg, client: client, log: cfg.Logger.Named("kubelet"), ipam: a,
		subnet: subnet, gateway: gw.To4(), hostIP: hostIP,
		workers: map[string][]*podWorker{},
	}, nil
}

func (k *kubelet) resolveImage(image string) (string, error) {
	return resolveImage(k.cfg.Images, k.cfg.ResolveImage, image)
}

// Run runs the pods bound to cfg.NodeName until ctx is done, then stops every
// process and removes every namespace and veth it created. It first removes
// leftovers of a previous run with the same NetnsPrefix.
func Run(ctx context.Context, cfg Config) error {
	k, err := newKubelet(cfg)
	if err != nil {
		return err
	}
	if _, err := net.InterfaceByName(cfg.Bridge); err != nil {
		return fmt.Errorf("kubelet: bridge %s: %w", cfg.Bridge, err)
	}
	if err := cleanupLeftovers(ctx, k.cfg.NetnsPrefix); err != nil {
		return fmt.Errorf("kubelet: cleaning leftovers: %w", err)
	}
	k.ctx = ctx
	if k.cgroups, err = newCgroups(k.cfg.NetnsPrefix); err != nil {
		k.log.Warn("containers run without resource limits", zap.Error(err))
	} else {
		defer k.cgroups.removeAll()
	}

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 10*time.Minute,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	podInformer := factory.Core().V1().Pods()
	k.lister = podInformer.Lister()
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubelet"})
	enqueue := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != cfg.NodeName {
			return // the fake clientset ignores field selectors
		}
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	// Services, for the variables every container gets (all namespaces,
	// unlike the pods, which are this node's only).
	svcFactory := informers.NewSharedInformerFactory(k.client, 10*time.Minute)
	svcInformer := svcFactory.Core().V1().Services()
	k.svcs = svcInformer.Lister()
	factory.Start(ctx.Done())
	svcFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer svcFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced, svcInformer.Informer().HasSynced) {
		k.shutdown()
		return ctx.Err()
	}
	if k.cfg.API.Address != "" {
		if err := k.serveAPI(ctx); err != nil {
			k.shutdown()
			return err
		}
	}
	k.log.Info("kubelet running", zap.String("node", cfg.NodeName), zap.String("bridge", cfg.Bridge),
		zap.String("podCIDR", cfg.PodCIDR))

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for k.processNext() {
			}
		})
	}
	<-ctx.Done()
	k.queue.ShutDown()
	wg.Wait()
	k.shutdown()
	return nil
}

// shutdown stops every pod worker and waits for their cleanup.
func (k *kubelet) shutdown() {
	k.mu.Lock()
	var all []*podWorker
	for _, ws := range k.workers {
		all = append(all, ws...)
	}
	k.mu.Unlock()
	for _, w := range all {
		w.requestStop(stopRequest{grace: 5 * time.Second})
	}
	for _, w := range all {
		<-w.done
	}
	k.log.Info("kubelet stopped")
}

func (k *kubelet) processNext() bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(key); err != nil {
		k.log.Warn("sync failed", zap.String("pod", key), zap.Error(err))
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// sync starts a worker for a new pod and stops workers of pods that are
// gone, being deleted or replaced by a pod of the same name.
func (k *kubelet) sync(key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && pod.Spec.NodeName != k.cfg.NodeName) {
		pod, err = nil, nil
	}
	if err != nil {
		return err
	}

	k.mu.Lock()
	current := k.stopOthers(key, pod)
	if pod == nil {
		k.mu.Unlock()
		return nil
	}
	if pod.DeletionTimestamp != nil {
		k.mu.Unlock()
		if current != nil {
			current.requestStop(stopRequest{grace: podGrace(current.pod, pod), deletePod: true})
			return nil
		}
		// Nothing runs for it (e.g. we restarted): finish the deletion.
		err := k.client.CoreV1().Pods(ns).Delete(k.ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	defer k.mu.Unlock()
	if current != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	k.startWorker(key, pod)
	return nil
}

// stopOthers stops the workers of key that do not run pod (it is gone or
// was replaced by a same-named pod) and returns the one that does. k.mu is
// held.
func (k *kubelet) stopOthers(key string, pod *corev1.Pod) *podWorker {
	var current *podWorker
	for _, w := range k.workers[key] {
		switch {
		case pod != nil && w.uid == pod.UID:
			current = w
		default:
			// The pod is gone, or this is an older pod of the same name.
			w.requestStop(stopRequest{grace: podGrace(w.pod, nil)})
		}
	}
	return current
}

// startWorker runs a new pod. k.mu is held.
func (k *kubelet) startWorker(key string, pod *corev1.Pod) {
	w := newPodWorker(k, key, pod)
	k.workers[key] = append(k.workers[key], w)
	w.log.Info("starting pod")
	go func() {
		w.run(k.ctx)
		k.mu.Lock()
		ws := k.workers[key]
		for i := range ws {
			if ws[i] == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(k.workers, key)
		} else {
			k.workers[key] = ws
		}
		k.mu.Unlock()
	}()
}

// podServices lists the services whose variables a pod's containers get:
// the API server's ("kubernetes" in default), and with service links on
// (the default) those of the pod's namespace, sorted by name.
func (k *kubelet) podServices(pod *corev1.Pod) []*corev1.Service {
	if k.svcs == nil {
		return nil
	}
	var out []*corev1.Service
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		out, _ = k.svcs.Services(pod.Namespace).List(labels.Everything())
		slices.SortFunc(out, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	}
	if api, err := k.svcs.Services(metav1.NamespaceDefault).Get("kubernetes"); err == nil && !slices.Contains(out, api) {
		out = append(out, api)
	}
	return out
}

// podGrace is the termination grace period: the deletion's if set, else the
// spec's, else 30s.
func podGrace(spec, deleting *corev1.Pod) time.Duration {
	if deleting != nil && deleting.DeletionGracePeriodSeconds != nil {
		return time.Duration(*deleting.DeletionGracePeriodSeconds) * time.Second
	}
	if spec.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*spec.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}
