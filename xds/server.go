package xds

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// MaxRecvMsgSize bounds one gRPC message from an Envoy. Delta requests
	// carrying thousands of initial resource versions outgrow gRPC's 4 MiB
	// default. Default 64 MiB.
	MaxRecvMsgSize int
	// AckTimeout bounds how long one Envoy's stream is held back waiting
	// for that Envoy to ACK new clusters before it gets the routes using
	// them, and new routes before it loses what they no longer use (for
	// SotW Envoys, the wait for all of them). Default 10s.
	AckTimeout time.Duration
	// Registry receives the xDS metrics; nil registers nothing.
	Registry prometheus.Registerer
	// Replica names this replica in CSDS answers, unique among the
	// replicas (in a cluster, the pod name). Default "sluice".
	Replica string
	// Creds secure the gRPC server (mutual TLS); nil serves plaintext.
	Creds credentials.TransportCredentials
}

// Server serves Envoy resources over ADS (SotW and delta). See the package
// documentation.
type Server struct {
	log     *zap.Logger
	opts    Options
	m       *metrics
	caches  map[string]*deltaCache
	gate    *gate
	tracker *tracker
	memory  *memoryReports
	xds     serverv3.Server
	health  *health.Server

	ctx      context.Context
	cancel   context.CancelFunc
	kick     chan struct{}
	done     chan struct{}
	sotwKick chan struct{}
	now      func() time.Time

	mu         sync.Mutex
	desired    state                          // latest state handed in
	served     state                          // what the caches hold
	dirty      map[string]map[string]struct{} // names changed in desired since the last round, by type
	size       map[string]int                 // encoded bytes served, by type
	gen        uint64
	desiredGen uint64        // generation of desired
	applied    appliedRounds // recent generations whose routes are served
	peers      *Peers        // Envoys of other replicas, if any
	ready      bool
	closed     bool
	warmed     *barrier   // the latest round's clusters, chained to earlier ones
	held       *barrier   // the latest round's routing, chained to earlier ones
	barriers   uint64     // barriers made, for their seq
	sotwSteps  []sotwStep // changes the SotW watches have yet to get
}

// New builds a Server and starts its update loop; Close stops it.
func New(log *zap.Logger, opts Options) *Server {
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = 64 << 20
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 10 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Replica == "" {
		opts.Replica = "sluice"
	}
	s := &Server{
		log:      log,
		opts:     opts,
		m:        newMetrics(opts.Registry),
		caches:   map[string]*deltaCache{},
		health:   health.NewServer(),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		sotwKick: make(chan struct{}, 1),
		now:      time.Now,
		desired:  state{},
		served:   state{},
		dirty:    map[string]map[string]struct{}{},
		size:     map[string]int{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	cpLog := cpLogger{log.Sugar()}
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cache.Cache{},
	}
	for _, t := range allTypes {
		var sotw sotwCache = cache.NewLinearCache(t, cache.WithLogger(cpLog))
		if t == scopeType {
			sotw = newFullStateCache()
		}
		c := newDeltaCache(t, sotw)
		c.passes, c.sweepEvery = s.passes, opts.AckTimeout
		s.caches[t] = c
		mux.Caches[t] = c
		s.desired[t] = map[string]entry{}
		s.served[t] = map[string]entry{}
		s.dirty[t] = map[string]struct{}{}
	}
	s.gate = newGate(mux)
	s.tracker = newTracker(s.m)
	s.memory = newMemoryReports(s.m, s.tracker.notify)
	go s.memory.run(s.ctx)
	s.xds = serverv3.NewServer(s.ctx, s.gate, s.callbacks(), sotw.WithOrderedADS(), sotw.WithLogger(cpLog))
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	go s.run()
	go s.recheckLoop()
	go s.sotwLoop()
	return s
}

func (s *Server) callbacks() serverv3.CallbackFuncs {
	t := s.tracker
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			t.open(streamKey{id: id}, typeURL)
			return nil
		},
		StreamClosedFunc: func(id int64, _ *core.Node) { t.closed(streamKey{id: id}) },
		StreamRequestFunc: func(id int64, r *discovery.DiscoveryRequest) error {
			t.onRequest(id, r)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, r *discovery.DiscoveryResponse) {
			t.onResponse(id, r)
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, typeURL string) error {
			t.open(streamKey{delta: true, id: id}, typeURL)
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { t.closed(streamKey{delta: true, id: id}) },
		StreamDeltaRequestFunc: func(id int64, r *discovery.DeltaDiscoveryRequest) error {
			t.onDeltaRequest(id, r)
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, r *discovery.DeltaDiscoveryResponse) {
			t.onDeltaResponse(id, r)
		},
	}
}

// GRPCOptions are the options Serve gives its gRPC server; use them when
// building your own server for Register.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.opts.MaxRecvMsgSize),
		// Find dead Envoys (and let them find us) on idle streams.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if s.opts.Creds != nil {
		opts = append(opts, grpc.Creds(s.opts.Creds))
	}
	return opts
}

// Register adds ADS, the per-type CDS/EDS/LDS/RDS/SDS services, CSDS, the
// gRPC health service and reflection to g.
func (s *Server) Register(g *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	secretservice.RegisterSecretDiscoveryServiceServer(g, s.xds)
	statusv3.RegisterClientStatusDiscoveryServiceServer(g, &csds{s: s})
	colmetricspb.RegisterMetricsServiceServer(g, s.memory)
	healthpb.RegisterHealthServer(g, s.health)
	reflection.Register(g)
}

// Serve serves on lis until ctx is done, then closes the Server.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer(s.GRPCOptions()...)
	s.Register(g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		s.Close()
		return err
	case <-ctx.Done():
	}
	// Ending the xDS streams first lets GracefulStop finish.
	s.Close()
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		g.Stop()
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Close ends all xDS streams and the update loop.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.health.Shutdown()
	s.cancel()
	<-s.done
}

// Ready reports whether the server has started serving (see MarkReady).
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// MarkReady starts serving whatever state has been set, even none. Until
// the first SetSnapshot or MarkReady, Envoys get no responses at all.
func (s *Server) MarkReady() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.openLocked()
}

// openLocked loads the whole desired state at once (nobody is served yet, so
// there is nothing to order) and opens the gate.
func (s *Server) openLocked() {
	if s.ready {
		return
	}
	for _, t := range allTypes {
		s.applyLocked(t, s.desired[t], nil)
		s.dirty[t] = map[string]struct{}{}
	}
	s.ready = true
	s.setAppliedLocked(s.desiredGen, listenerRefs(s.desired))
	s.gate.openGate(func(err error) { s.log.Error("xds: forwarding a parked watch", zap.Error(err)) })
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.log.Info("xds: serving")
}

// Nodes returns the state of every connected Envoy, sorted by node id.
func (s *Server) Nodes() []NodeStatus { return s.tracker.snapshot() }

// VersionOf is Version(m), read from the desired state when m is the very
// message held there under name, so asking about what was handed over
// costs no encoding.
func (s *Server) VersionOf(typeURL, name string, m proto.Message) string {
	s.mu.Lock()
	e, ok := s.desired[typeURL][name]
	s.mu.Unlock()
	if ok && e.msg == m {
		return e.version
	}
	return Version(m)
}

// NodeIDs lists the ids of the connected Envoys, in no order.
func (s *Server) NodeIDs() []string { return s.tracker.nodeIDs() }

// Rejections lists the standing rejections of the connected Envoys, in no
// order; unlike Nodes it costs the number of rejections only.
func (s *Server) Rejections() []Rejection { return s.tracker.rejections() }

// Acked returns the ids of the connected Envoys that hold resource name of
// typeURL at version (see Version), sorted.
func (s *Server) Acked(typeURL, name, version string) []string {
	return s.tracker.acked(typeURL, name, version)
}

// Subscribe returns a channel that receives a value whenever an Envoy ACKs,
// NACKs, connects or disconnects; signals coalesce, so re-read Nodes or
// Acked on each. Call cancel when done.
func (s *Server) Subscribe() (ch <-chan struct{}, cancel func()) { return s.tracker.subscribe() }

// Served returns the version of resource name of typeURL that the server
// currently serves, or "" if it serves none. A resource from the latest
// snapshot may not be served yet while the server waits for Envoys to ACK
// what must come before it.
func (s *Server) Served(typeURL, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[typeURL][name].version
}
