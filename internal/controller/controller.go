// Package controller is the glue between Kubernetes and Sluice: informers
// feed the translator, the translator's table feeds an xDS sink, and KIngress
// status flows back: internal/rollout decides it from what the Envoys hold
// (status.go writes it, nack.go takes rejected ingresses out).
package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"
	kinformers "knative.dev/networking/pkg/client/informers/externalversions"
	klisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"

	"sluice.dev/sluice/internal/rollout"
	"sluice.dev/sluice/translator"
)

// Sink receives what Envoy should serve and says what the Envoys hold.
// The xds package implements it (through internal/xdssink).
type Sink interface {
	// Publish hands over the full state: resources and every EDS cluster's
	// assignment. It returns the generation of that state, from 1 up.
	Publish(out *translator.Output, endpoints map[string]*endpointv3.ClusterLoadAssignment) (uint64, error)
	// PublishEndpoints hands over changed assignments only.
	PublishEndpoints(endpoints map[string]*endpointv3.ClusterLoadAssignment) error
	// Subscribe signals whenever what the Envoys hold may have changed.
	Subscribe() (<-chan struct{}, func())
	// What the Envoys hold, for the way back.
	rollout.Fleet
}

// Options configure the controller.
type Options struct {
	IngressClass string
	// SystemNamespace holds config-sluice, config-network and the gateway
	// Services.
	SystemNamespace string
	// WatchAllSecrets drops the certificate-uid label filter on Secrets.
	WatchAllSecrets bool
	// Gateway Service names, for the load balancer status.
	PublicService, PrivateService string
	ClusterDomain                 string
	// Translator is used until config-sluice says otherwise (and for the
	// keys config-sluice leaves out).
	Translator translator.Config
	// Debounce gathers changes for this long before publishing.
	Debounce time.Duration
	Workers  int
	Resync   time.Duration
	// NamePendingAfter is how long an ingress waits for Envoys before its
	// status names those that do not serve it yet (0: 5 s). Sooner, the
	// common case of a change reaching every Envoy in milliseconds would
	// cost a status write more.
	NamePendingAfter time.Duration
	// NACKAnnotation, for tests only: an ingress annotated with this key
	// set to "true" is translated into something Envoy rejects.
	NACKAnnotation string
}

// Controller watches KIngresses and what they reference.
type Controller struct {
	opts    Options
	log     *zap.Logger
	kube    kubernetes.Interface
	kn      clientset.Interface
	sink    Sink
	metrics *Metrics

	kubeInformers informers.SharedInformerFactory
	cmInformers   informers.SharedInformerFactory
	secInformers  informers.SharedInformerFactory
	caInformers   informers.SharedInformerFactory // Serving's routing Secret only
	knInformers   kinformers.SharedInformerFactory
	ingLister     klisters.IngressLister
	svcLister     corelisters.ServiceLister
	sliceLister   discoverylisters.EndpointSliceLister
	secretLister  corelisters.SecretLister
	caLister      corelisters.SecretLister
	cmLister      corelisters.ConfigMapLister
	synced        []cache.InformerSynced

	queue       workqueue.TypedRateLimitingInterface[string]
	statusQueue workqueue.TypedRateLimitingInterface[string]
	kick        chan struct{}

	mu       sync.Mutex // guards everything below
	cfg      translator.Config
	def      *tlsv3.Secret // the default certificate, from cfg
	table    *translator.Table
	deps     *deps
	eds      map[string]*endpointv3.ClusterLoadAssignment
	backends map[string]translator.Backend
	// EDS clusters per Service ("ns/name"), from the last publish
	clustersBySvc map[string][]string
	clusterSvc    map[string]string // cluster -> "namespace/service", for clustersBySvc
	published     bool
	// the way back: per ingress, what the Envoys serve of it
	book   *rollout.Book
	ready  bool
	leader bool
}

// New wires the informers; Run starts them.
func New(log *zap.Logger, kube kubernetes.Interface, kn clientset.Interface, sink Sink, m *Metrics, opts Options) *Controller {
	if opts.NamePendingAfter <= 0 {
		opts.NamePendingAfter = 5 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	c := &Controller{
		opts: opts, log: log, kube: kube, kn: kn, sink: sink, metrics: m,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ingress"}),
		statusQueue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "status"}),
		kick: make(chan struct{}, 1),
		cfg:  opts.Translator,
		deps: newDeps(),
		eds:  map[string]*endpointv3.ClusterLoadAssignment{},
		book: rollout.NewBook(sink),
	}
	c.table = translator.NewTable(c.cfg, nil)

	c.kubeInformers = informers.NewSharedInformerFactoryWithOptions(kube, opts.Resync, informers.WithTransform(dropManagedFields))
	c.cmInformers = informers.NewSharedInformerFactoryWithOptions(kube, opts.Resync, informers.WithNamespace(opts.SystemNamespace), informers.WithTransform(dropManagedFields))
	secOpts := []informers.SharedInformerOption{informers.WithTransform(dropManagedFields)}
	if !opts.WatchAllSecrets {
		secOpts = append(secOpts, informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = networking.CertificateUIDLabelKey
		}))
	}
	c.secInformers = informers.NewSharedInformerFactoryWithOptions(kube, opts.Resync, secOpts...)
	c.caInformers = informers.NewSharedInformerFactoryWithOptions(kube, opts.Resync, informers.WithNamespace(opts.SystemNamespace),
		informers.WithTransform(dropManagedFields), informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = "metadata.name=" + translator.RoutingCertSecret
		}))
	c.knInformers = kinformers.NewSharedInformerFactoryWithOptions(kn, opts.Resync, kinformers.WithTransform(dropManagedFields))

	ingInf := c.knInformers.Networking().V1alpha1().Ingresses()
	svcInf := c.kubeInformers.Core().V1().Services()
	sliceInf := c.kubeInformers.Discovery().V1().EndpointSlices()
	secInf := c.secInformers.Core().V1().Secrets()
	cmInf := c.cmInformers.Core().V1().ConfigMaps()
	caInf := c.caInformers.Core().V1().Secrets()
	c.ingLister, c.svcLister, c.sliceLister = ingInf.Lister(), svcInf.Lister(), sliceInf.Lister()
	c.secretLister, c.cmLister, c.caLister = secInf.Lister(), cmInf.Lister(), caInf.Lister()

	_, _ = ingInf.Informer().AddEventHandler(handler(func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}))
	_, _ = svcInf.Informer().AddEventHandler(handler(func(obj any) { c.enqueueDependents(obj, c.deps.byService) }))
	_, _ = secInf.Informer().AddEventHandler(handler(func(obj any) { c.enqueueDependents(obj, c.deps.bySecret) }))
	_, _ = sliceInf.Informer().AddEventHandler(handler(c.sliceChanged))
	_, _ = cmInf.Informer().AddEventHandler(handler(func(obj any) {
		if m, ok := metaOf(obj); ok && isConfig(m) {
			c.configChanged()
		}
	}))
	_, _ = caInf.Informer().AddEventHandler(handler(func(any) { c.configChanged() }))
	c.synced = []cache.InformerSynced{ingInf.Informer().HasSynced, svcInf.Informer().HasSynced,
		sliceInf.Informer().HasSynced, secInf.Informer().HasSynced, cmInf.Informer().HasSynced, caInf.Informer().HasSynced}
	return c
}

func handler(f func(any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    f,
		UpdateFunc: func(_, n any) { f(n) },
		DeleteFunc: f,
	}
}

func metaOf(obj any) (metav1.Object, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(metav1.Object)
	return m, ok
}

// Ready reports whether the first full state has been published.
func (c *Controller) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// Run starts the informers, publishes the first full translation once
// they have synced, then keeps everything up to date until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	defer c.statusQueue.ShutDown()
	for _, f := range []interface{ Start(<-chan struct{}) }{c.kubeInformers, c.cmInformers, c.secInformers, c.caInformers, c.knInformers} {
		f.Start(ctx.Done())
	}
	c.log.Info("waiting for informers to sync")
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("informers did not sync: %w", ctx.Err())
	}
	c.loadConfig()
	// The first full translation, before anything is served: an Envoy that
	// connects early must never see an empty config.
	ings, err := c.ingLister.List(labels.Everything())
	if err != nil {
		return err
	}
	start := time.Now()
	n := 0
	for _, ing := range ings {
		if c.ours(ing) {
			c.translate(ing)
			n++
		}
	}
	if err := c.publish(); err != nil {
		return fmt.Errorf("first publish: %w", err)
	}
	c.mu.Lock()
	c.ready = true
	c.mu.Unlock()
	c.log.Info("first full translation published", zap.Int("ingresses", n), zap.Duration("took", time.Since(start)))

	var wg sync.WaitGroup
	for i := 0; i < c.opts.Workers; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); c.work(ctx, c.queue, c.reconcile) }()
		go func() { defer wg.Done(); c.work(ctx, c.statusQueue, c.updateStatus) }()
	}
	wg.Add(2)
	go func() { defer wg.Done(); c.publishLoop(ctx) }()
	go func() { defer wg.Done(); c.watchEnvoys(ctx) }()
	<-ctx.Done()
	c.queue.ShutDown()
	c.statusQueue.ShutDown()
	wg.Wait()
	return nil
}

func (c *Controller) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], f func(context.Context, string) error) {
	for {
		key, quit := q.Get()
		if quit {
			return
		}
		if err := f(ctx, key); err != nil {
			c.log.Warn("retrying", zap.String("key", key), zap.Error(err))
			q.AddRateLimited(key)
		} else {
			q.Forget(key)
		}
		q.Done(key)
	}
}

// ours: the class annotation (or its older spelling) names our class.
func (c *Controller) ours(ing *v1alpha1.Ingress) bool {
	a := ing.GetAnnotations()
	class, ok := a[networking.IngressClassAnnotationKey]
	if !ok {
		class = a[networking.IngressClassAnnotationAltKey]
	}
	return class == c.opts.IngressClass
}

// reconcile re-translates one ingress. It never writes to the API: status
// is written after the result is published.
func (c *Controller) reconcile(_ context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	ing, err := c.ingLister.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && (!c.ours(ing) || ing.DeletionTimestamp != nil)) {
		c.mu.Lock()
		if _, ok := c.table.Get(key); ok {
			c.table.Delete(key)
			c.deps.set(key, nil, nil)
			c.mu.Unlock()
			c.requestPublish()
			return nil
		}
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	if c.translate(ing) {
		c.requestPublish()
	} else {
		// Unchanged translation; the status may still lag (e.g. after a
		// restart), so let the status worker look.
		c.statusQueue.Add(key)
	}
	return nil
}

// translate updates the table with the ingress's new piece and reports
// whether it changed anything.
func (c *Controller) translate(ing *v1alpha1.Ingress) bool {
	start := time.Now()
	c.mu.Lock()
	cfg := c.cfg
	c.mu.Unlock()
	p := translator.Translate(ing, lookup{c}, &cfg)
	c.metrics.observeTranslation(time.Since(start), p.Err)
	if c.opts.NACKAnnotation != "" && ing.Annotations[c.opts.NACKAnnotation] == "true" {
		p = injectNACK(p)
	}
	key := p.Key()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deps.set(key, p.Services, p.SecretRefs)
	if e := c.book.Quarantined(key, p.Digest); e != nil {
		p = rollout.RejectedPiece(p, e) // the same translation: still rejected
	}
	if e := rollout.StatusRejection(ing); e != nil && p.Err == nil {
		p = rollout.RejectedPiece(p, e) // the leader's word, so replicas agree
	}
	if old, ok := c.table.Get(key); ok && samePiece(old, p) {
		return false
	}
	c.table.Set(p)
	c.book.Changed(key, start)
	return true
}

// samePiece: same generation and same outcome means nothing to publish.
// The translation is deterministic, so equal inputs give equal pieces; we
// still compare content for changes that come from Services or Secrets.
func samePiece(a, b *translator.Piece) bool {
	return a.Generation == b.Generation && a.Digest == b.Digest
}

// dropManagedFields keeps managedFields out of the informer caches: the
// controller never reads them, and with tens of thousands of Services and
// KIngresses they are a good part of its memory. (A status update without
// them leaves the server's as they are.)
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func (c *Controller) enqueueDependents(obj any, index func(string) []string) {
	m, ok := metaOf(obj)
	if !ok {
		return
	}
	c.mu.Lock()
	keys := index(m.GetNamespace() + "/" + m.GetName())
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
	// The default certificate is not referenced by an ingress.
	if c.isDefaultCert(m) {
		c.configChanged()
	}
}

// ourKeys lists the keys of every ingress of our class in the cache.
func (c *Controller) ourKeys() []string {
	ings, err := c.ingLister.List(labels.Everything())
	if err != nil {
		return nil
	}
	var keys []string
	for _, ing := range ings {
		if c.ours(ing) {
			keys = append(keys, ing.Namespace+"/"+ing.Name)
		}
	}
	return keys
}

// lookup serves the translator from the informer caches.
type lookup struct{ c *Controller }

func (l lookup) Service(ns, name string) (*corev1.Service, bool) {
	s, err := l.c.svcLister.Services(ns).Get(name)
	return s, err == nil
}

func (l lookup) Secret(ns, name string) (*corev1.Secret, bool) {
	s, err := l.c.secretLister.Secrets(ns).Get(name)
	return s, err == nil
}
