package translator

import (
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the listeners and of the scope sets their connection managers
// use. Listeners never change as ingresses come and go: routes change
// through SRDS and RDS, certificates through SDS. HTTPS listeners gain or lose SNI filter chains only when the
// set of TLS hosts changes, which Envoy applies in place without draining
// the other chains.
const (
	ExternalHTTP  = "external-http"
	ExternalHTTPS = "external-https"
	InternalHTTP  = "internal-http"
	InternalHTTPS = "internal-https"
	// Scopes of the internal listeners (HTTP and HTTPS).
	InternalRoutes = "internal"
)

// listenAddress binds "::" dual-stack: Envoy sets IPV6_V6ONLY otherwise,
// and IPv4 clients (and the local-gateway clusters) could not connect.
// listenAddress is the first listen address; "::" alone takes IPv4 too.
func listenAddress(cfg *Config, port uint32) *corev3.Address {
	addrs := cfg.listenAddresses()
	if len(addrs) == 0 {
		return socketAddress(cfg.ListenAddress, port)
	}
	a := socketAddress(addrs[0].String(), port)
	if len(addrs) == 1 && addrs[0].Is6() && addrs[0].IsUnspecified() {
		a.GetSocketAddress().Ipv4Compat = true
	}
	return a
}

// moreAddresses are the other listen addresses, each its own socket (an
// IPv6 one takes IPv6 only).
func moreAddresses(cfg *Config, port uint32) []*listenerv3.AdditionalAddress {
	var out []*listenerv3.AdditionalAddress
	addrs := cfg.listenAddresses()
	for i := 1; i < len(addrs); i++ {
		out = append(out, &listenerv3.AdditionalAddress{Address: socketAddress(addrs[i].String(), port)})
	}
	return out
}

func httpListener(name string, port uint32, scopes string, cfg *Config) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:                name,
		Address:             listenAddress(cfg, port),
		AdditionalAddresses: moreAddresses(cfg, port),
		ListenerFilters:     proxyProtocol(name, cfg),
		FilterChains:        []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcm(name, scopes, cfg)}}},
	}
}

// proxyProtocol reads the PROXY protocol header on the external listeners
// when asked: the load balancer in front then passes on the client's
// address, and a connection without the header is refused.
func proxyProtocol(listener string, cfg *Config) []*listenerv3.ListenerFilter {
	if !cfg.ProxyProtocol || (listener != ExternalHTTP && listener != ExternalHTTPS) {
		return nil
	}
	return []*listenerv3.ListenerFilter{{
		Name:       wellknown.ProxyProtocol,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&proxyprotocolv3.ProxyProtocol{})},
	}}
}

// httpsListener serves one filter chain per TLS entry, chosen by SNI, and
// the default certificate (if any) to everything else. With neither it is
// left out: Envoy rejects a listener without filter chains.
func httpsListener(name string, port uint32, scopes string, entries []TLSEntry, defaultSecret string, cfg *Config) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:                name,
		Address:             listenAddress(cfg, port),
		AdditionalAddresses: moreAddresses(cfg, port),
		// The PROXY header comes before the TLS hello.
		ListenerFilters: append(proxyProtocol(name, cfg), &listenerv3.ListenerFilter{
			Name:       wellknown.TLSInspector,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		}),
	}
	for _, e := range entries {
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             e.Secret + "/" + e.Hosts[0],
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: e.Hosts},
			TransportSocket:  downstreamTLS(e.Secret, cfg),
			Filters:          []*listenerv3.Filter{hcm(name, scopes, cfg)},
		})
	}
	if defaultSecret != "" {
		l.DefaultFilterChain = &listenerv3.FilterChain{
			Name:            "default",
			TransportSocket: downstreamTLS(defaultSecret, cfg),
			Filters:         []*listenerv3.Filter{hcm(name, scopes, cfg)},
		}
	}
	if len(l.FilterChains) == 0 && l.DefaultFilterChain == nil {
		return nil
	}
	return l
}

func hcm(stat, scopes string, cfg *Config) *listenerv3.Filter {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix:     stat,
		CodecType:      hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: scopedRoutes(scopes),
		HttpFilters:    httpFilters(scopes, cfg),
		// The scope key, before the scope is chosen (scopekey.go).
		EarlyHeaderMutationExtensions: []*corev3.TypedExtensionConfig{scopeKeyMutation(scopes)},
		UpgradeConfigs:                []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		UseRemoteAddress:              wrapperspb.Bool(true),
		AccessLog:                     accessLogs(cfg),
		Tracing:                       tracing(cfg),
	}
	if cfg.TrustedHops > 0 {
		// X-Forwarded-For entries added by this many proxies in front are
		// believed: the client address is the one before them.
		m.XffNumTrustedHops = cfg.TrustedHops
	}
	if cfg.ServerHeader != "" {
		m.ServerHeaderTransformation = serverHeaders[cfg.ServerHeader]
	}
	m.ServerName = cfg.ServerName
	// Zero turns the bound off: Envoy's own default (5 minutes) would
	// reset a quiet WebSocket, gRPC stream or SSE response that Serving
	// lets run for its revision's timeoutSeconds (up to 10 minutes by
	// default).
	m.StreamIdleTimeout = durationpb.New(cfg.StreamIdleTimeout)
	if cfg.IdleTimeout > 0 {
		m.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(cfg.IdleTimeout)}
	}
	return &listenerv3.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)},
	}
}

// httpFilters: the scope key of upper-case hosts first, CORS and
// authorization (if any), the router.
func httpFilters(scopes string, cfg *Config) []*hcmv3.HttpFilter {
	out := []*hcmv3.HttpFilter{lowerCaseKey(scopes)}
	if f := corsHTTPFilter(cfg); f != nil {
		out = append(out, f)
	}
	if f := extAuthz(cfg); f != nil {
		out = append(out, f)
	}
	return append(out, &hcmv3.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	})
}

func downstreamTLS(secret string, cfg *Config) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams:     tlsParams(cfg),
		AlpnProtocols: []string{"h2", "http/1.1"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
			Name:      secret,
			SdsConfig: adsSource(),
		}},
	}}
	return &corev3.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// mustAny packs a message; it only fails for messages that cannot be
// marshalled, which none of ours are.
func mustAny(m proto.Message) *anypb.Any {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: b}
}

func (t *Table) listeners() []*listenerv3.Listener {
	cfg := &t.cfg
	var entries []TLSEntry
	for _, e := range t.tls {
		entries = append(entries, e...)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Hosts[0] < entries[j].Hosts[0] })
	defaultName := ""
	if t.defaultSecret != nil {
		defaultName = t.defaultSecret.Name
	}
	var out []*listenerv3.Listener
	for _, l := range []*listenerv3.Listener{
		httpListener(ExternalHTTP, cfg.ExternalHTTPPort, ExternalHTTP, cfg),
		httpsListener(ExternalHTTPS, cfg.ExternalHTTPSPort, ExternalHTTPS, entries, defaultName, cfg),
		httpListener(InternalHTTP, cfg.InternalHTTPPort, InternalRoutes, cfg),
		httpsListener(InternalHTTPS, cfg.InternalHTTPSPort, InternalRoutes, entries, defaultName, cfg),
	} {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}
