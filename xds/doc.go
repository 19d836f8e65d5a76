// Package xds is Sluice's xDS server: it serves the Envoy resources the
// controller computes to many Envoys over ADS, state-of-the-world and delta,
// on go-control-plane.
//
// Use:
//
//	srv := xds.New(log, xds.Options{Registry: prometheus.DefaultRegisterer})
//	go srv.Serve(ctx, lis)          // or srv.Register(grpcServer)
//	srv.SetSnapshot(xds.Snapshot{Clusters: ..., Listeners: ...}) // full state
//	srv.Update(changed, removed)    // a change, at the cost of its size
//	gen := srv.Generation()         // the generation carrying that state
//	srv.SetEndpoints(changedCLAs)   // endpoint-only updates (upserts)
//	synced, behind := srv.Synced(gen) // which Envoys hold gen's listeners
//	behind = srv.Behind(refs)       // which lack these resources at these versions
//	ch, cancel := srv.Subscribe()   // signalled on every ACK/NACK/(dis)connect
//
// Caches. One cache per type (clusters, endpoints, secrets, listeners,
// scopes, routes) behind a MuxCache: deltaCache answers delta watches from
// a log of changed names (see deltacache.go); SotW watches go to a
// go-control-plane LinearCache (for scopes, to fullStateCache, since Envoy
// reads SotW SRDS as the whole set). The server keeps its desired and served
// state by name and each round hands the caches only the names changed
// since the last one, so only subscribers of a changed resource hear about
// it, an unchanged state sends nothing, endpoint updates touch EDS alone,
// and nothing per change walks every resource.
//
// Versions. A resource's version is the SHA-256 of its deterministic
// encoding (Version): LinearCache uses exactly that for delta xDS. For SotW,
// where go-control-plane would send its cache's update counter, the
// version_info of each response is rewritten to a hash of what the Envoy
// holds of that type once it applies the response. Same state, same
// versions: across restarts and replicas. A delta Envoy that reconnects
// (to any replica) with initial_resource_versions gets only what differs;
// a SotW one gets everything again, as the protocol requires.
//
// Nothing before the first state. Watches are parked until the first
// SetSnapshot (or MarkReady), so an Envoy that connects early, or reconnects
// to a fresh replica, never receives an empty configuration that would drop
// its live routes. Parked watches are answered in xDS order (CDS, EDS, SDS,
// LDS, RDS) when serving starts. The gRPC health service reports SERVING
// from then on.
//
// Make before break, per Envoy. ADS answers are sent in the order the
// caches are updated, but a type whose previous response is not yet ACKed
// gets its update later, so ordering comes from ACKs. Each update round
// (see Server.run) hands the caches everything at once:
//
//  1. clusters, endpoints and secrets;
//  2. route configurations, then scopes and listeners, behind a barrier:
//     a stream gets them once its Envoy has ACKed the changed clusters and
//     holds endpoints for each new EDS cluster (so it is warm), or has
//     NACKed them. Envoys never see a route to a cluster they do not have,
//     a scope before its route configuration, or a listener before its
//     secret;
//  3. what is no longer wanted (route configurations, secrets, clusters,
//     endpoints), behind a second barrier: a stream lets them go once its
//     Envoy holds what step 2 changed, in this round and the ones before.
//
// A delta stream gets a name whose latest change has a barrier only once
// its Envoy has passed that barrier (barrier.go); it keeps the name held
// back meanwhile, and everything else goes on. So an Envoy that is slow or
// stopped reading holds back its own stream and nobody else's. Every Envoy
// passes a barrier at its deadline: Options.AckTimeout after the round for
// step 2, twice that for step 3 (it may follow step 2's wait). An ACK
// rechecks the held-back watches of its own Envoy only. SotW streams,
// which the caches cannot hold back one by one, get steps 2 and 3 once
// every SotW Envoy has passed the barrier: among SotW Envoys the slowest
// still sets the pace. Rounds never wait; SetSnapshot, Update and
// SetEndpoints never block on Envoys.
//
// ACK/NACK tracking. go-control-plane's stream callbacks record what was
// sent under which nonce and which nonce each Envoy ACKed or NACKed, per
// node (node id: the pod, node cluster: the gateway), type and resource.
// Nodes, Acked, Synced, Behind, Rejections and Subscribe expose it; CSDS
// (envoy.service.status.v3.ClientStatusDiscoveryService) serves it over
// gRPC. Disconnected nodes are dropped.
//
// Memory reports. The server also takes the OpenTelemetry metrics export
// (opentelemetry.proto.collector.metrics.v1.MetricsService) by which each
// Envoy reports its heap and overload actions every 5 s (memory.go). CSDS
// carries them in the node's metadata, Synced and Behind leave out Envoys
// whose overload manager turns traffic away, and Refusing says why.
//
// Metrics: sluice_xds_pushes_total, sluice_xds_acks_total,
// sluice_xds_nacks_total (by type), sluice_xds_connected_envoys,
// sluice_xds_resources and sluice_xds_resource_bytes (by type);
// sluice_envoy_heap_pressure and sluice_envoy_overload_action (by Envoy).
package xds
