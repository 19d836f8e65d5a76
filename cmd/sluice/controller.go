package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientset "knative.dev/networking/pkg/client/clientset/versioned"

	"sluice.dev/sluice/internal/controller"
	"sluice.dev/sluice/internal/xdssink"
	"sluice.dev/sluice/internal/xdstls"
	"sluice.dev/sluice/translator"
	"sluice.dev/sluice/xds"
)

func runController(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := translator.DefaultConfig()
	opts := controller.Options{Translator: def}
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file; in-cluster config when empty")
	xdsAddr := fs.String("xds-address", ":18000", "address of the xDS gRPC server (ADS, CSDS, reflection, health)")
	adminAddr := fs.String("admin-address", ":19000", "address of /metrics, /healthz, /readyz (and /debug/pprof with --pprof)")
	withPprof := fs.Bool("pprof", false, "serve Go's profiles under /debug/pprof on the admin address")
	logFormat := fs.String("log-format", "", "json or console (default: json in a cluster, console otherwise)")
	logLevel := zapcore.InfoLevel
	fs.TextVar(&logLevel, "log-level", zapcore.InfoLevel, "log level: debug, info, warn or error")
	fs.StringVar(&opts.IngressClass, "ingress-class", "sluice.ingress.networking.knative.dev", "KIngress class served")
	fs.StringVar(&opts.SystemNamespace, "namespace", envOr("SYSTEM_NAMESPACE", "knative-serving"), "namespace of config-sluice and the gateway Services")
	fs.StringVar(&opts.PublicService, "public-service", "sluice-gateway", "Service of the external gateway")
	fs.StringVar(&opts.PrivateService, "private-service", "sluice-internal", "Service of the cluster-local gateway")
	fs.StringVar(&opts.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	fs.BoolVar(&opts.WatchAllSecrets, "watch-all-secrets", false, "watch every Secret, not only those labelled "+"networking.internal.knative.dev/certificate-uid")
	fs.DurationVar(&opts.Debounce, "debounce", 5*time.Millisecond, "gather changes for this long before publishing")
	fs.DurationVar(&opts.NamePendingAfter, "name-pending-after", 5*time.Second, "after this long waiting for Envoys, a KIngress's status names those that do not serve it yet")
	fs.IntVar(&opts.Workers, "workers", 4, "reconcile workers")
	for _, np := range opts.Translator.Ports() {
		fs.Func(np.Key, fmt.Sprintf("Envoy listener port (default %d; config-sluice may override)", *np.Port), func(s string) error {
			var n uint32
			if _, err := fmt.Sscan(s, &n); err != nil {
				return err
			}
			*np.Port = n
			return nil
		})
	}
	testingFlags(fs, &opts)
	peers := fs.String("peers", "", "comma-separated host:port of every replica's xDS server (a name may resolve to several, e.g. a headless Service): readiness counts, and CSDS shows, the Envoys of all replicas")
	replica := fs.String("replica-name", os.Getenv("POD_NAME"), "this replica's name in CSDS answers, unique among the replicas (default $POD_NAME, else host name and xDS port)")
	leaderElect := fs.Bool("leader-elect", true, "only the holder of a Lease writes KIngress status")
	var tlsFiles xdstls.Files
	fs.StringVar(&tlsFiles.Cert, "xds-tls-cert", "", "PEM certificate of the xDS server (also presented to the other replicas); with --xds-tls-key and --xds-tls-ca, xDS is mutual TLS")
	fs.StringVar(&tlsFiles.Key, "xds-tls-key", "", "PEM key of --xds-tls-cert")
	fs.StringVar(&tlsFiles.CA, "xds-tls-ca", "", "PEM CA that signs the Envoys' (and replicas') client certificates; the files are read again when they change")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := opts.Translator.Validate(); err != nil {
		return err
	}
	// The private gateway's own domain is served by our internal listener.
	opts.Translator.LocalGatewayDomains = append(opts.Translator.LocalGatewayDomains,
		fmt.Sprintf("%s.%s.svc.%s", opts.PrivateService, opts.SystemNamespace, opts.ClusterDomain))

	restCfg, inCluster, err := kubeConfig(*kubeconfig)
	if err != nil {
		return err
	}
	log, err := newLogger(*logFormat, inCluster, logLevel)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	restCfg.QPS, restCfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	kn, err := clientset.NewForConfig(restCfg)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if *replica == "" {
		*replica = defaultReplicaName(*xdsAddr)
	}
	var serverCreds, peerCreds credentials.TransportCredentials
	if tlsFiles.Enabled() {
		certs, err := xdstls.Load(tlsFiles)
		if err != nil {
			return fmt.Errorf("xds-tls: %w", err)
		}
		serverCreds, peerCreds = certs.Server(), certs.Client()
	}
	srv := xds.New(log.Named("xds"), xds.Options{Registry: reg, Replica: *replica, Creds: serverCreds})
	var pr *xds.Peers
	if *peers != "" {
		pr = xds.NewPeers(log.Named("peers"), strings.Split(*peers, ","), 0, peerCreds)
		srv.SetPeers(pr)
	}
	ctrl := controller.New(log.Named("controller"), kube, kn, xdssink.New(srv, pr), controller.NewMetrics(reg), opts)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	xlis, err := net.Listen("tcp", *xdsAddr)
	if err != nil {
		return fmt.Errorf("xds-address: %w", err)
	}
	alis, err := net.Listen("tcp", *adminAddr)
	if err != nil {
		return fmt.Errorf("admin-address: %w", err)
	}
	log.Info("starting", zap.String("version", version), zap.String("xds", xlis.Addr().String()),
		zap.String("admin", alis.Addr().String()), zap.String("class", opts.IngressClass), zap.String("replica", *replica), zap.String("peers", *peers), zap.Bool("xdsTLS", tlsFiles.Enabled()))

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, xlis) })
	if pr != nil {
		g.Go(func() error { pr.Run(ctx); return nil })
	}
	g.Go(func() error {
		return serveAdmin(ctx, alis, reg, func() bool { return ctrl.Ready() && srv.Ready() }, *withPprof)
	})
	g.Go(func() error {
		if *leaderElect {
			return controller.RunLeaderElection(ctx, log.Named("leader"), kube, opts.SystemNamespace, ctrl)
		}
		ctrl.SetLeader(true)
		return nil
	})
	g.Go(func() error { return ctrl.Run(ctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func serveAdmin(ctx context.Context, lis net.Listener, reg *prometheus.Registry, ready func() bool, withPprof bool) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: informers syncing or first translation not published", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func kubeConfig(path string) (*rest.Config, bool, error) {
	if path == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, false, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return c, true, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, false, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, false, nil
}

func newLogger(format string, inCluster bool, level zapcore.Level) (*zap.Logger, error) {
	if format == "" {
		format = "console"
		if inCluster {
			format = "json"
		}
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
	default:
		return nil, fmt.Errorf("log-format: %q is not json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	return cfg.Build()
}

// defaultReplicaName is unique among replicas on one host by their port.
func defaultReplicaName(xdsAddr string) string {
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(xdsAddr)
	return net.JoinHostPort(cmp.Or(host, "sluice"), port)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
